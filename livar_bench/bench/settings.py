"""What a benchmark measures: its settings and the synthetic clients both paths train on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from livar_bench.data.base import ImageSplit
from livar_bench.types import Signal

H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H100 SXM datasheet, dense BF16 tensor-core peak
# The reference computes LIVAR's path-integral signal and the class variances; both paths collect them.
BENCH_SIGNALS = frozenset({Signal.LORA_SIGNAL, Signal.CLASS_STATS})


H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H100 SXM datasheet, dense BF16 tensor-core peak
# The reference computes LIVAR's path-integral signal and the class variances; both paths collect them.
BENCH_SIGNALS = frozenset({Signal.LORA_SIGNAL, Signal.CLASS_STATS})


@dataclass(frozen=True)
class BenchSettings:
    """What to measure: backbone, local training shape and the number of simulated clients."""

    backbone: str = "livar_tiny_vit"
    pretrained: bool = False  # speed does not depend on the weights; no download needed by default
    image_size: int | None = None
    weights: str | None = None  # a local weights file (e.g. real DINOv2 ViT-S/14), as `run --weights`
    batch_size: int = 16
    lora_rank: int = 16
    lora_alpha: float = 16.0
    clients: int = 4
    samples_per_client: int = 64
    epochs: int = 1
    num_classes: int = 100
    eval_samples: int = 256
    eval_batch_size: int = 256
    method: str = "fedavg"
    device: str = "auto"
    precision: str = "auto"  # auto = bf16 on CUDA, fp32 on CPU (the optimised path only)
    compile: bool = False
    pack: int | None = None  # also time client packing with this many clients per pack; None = auto
    reference: bool = True
    repeats: int = 1  # rounds per path, interleaved; the per-phase median is reported
    peak_tflops: float = H100_BF16_DENSE_TFLOPS
    lr: float = 1e-4
    weight_decay: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class Workload:
    """Synthetic clients and a test set, as uint8 tensors on the CPU (each path moves what it needs)."""

    clients: list[ImageSplit]
    test: ImageSplit
    storage_size: int


def make_workload(settings: BenchSettings, input_size: int) -> Workload:
    g = torch.Generator().manual_seed(settings.seed)
    size = input_size  # stored at the input size, as the decode-once cache stores it

    def split(n: int) -> ImageSplit:
        images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
        labels = torch.randint(0, settings.num_classes, (n,), generator=g)
        return ImageSplit(images, labels)

    return Workload([split(settings.samples_per_client) for _ in range(settings.clients)],
                    split(settings.eval_samples), size)
