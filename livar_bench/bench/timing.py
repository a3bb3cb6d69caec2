"""Per-phase wall-clock times and peak memory of a benchmark round, and their medians over repeats.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from livar_bench.types import Signal

H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H100 SXM datasheet, dense BF16 tensor-core peak
# The reference computes LIVAR's path-integral signal and the class variances; both paths collect them.
BENCH_SIGNALS = frozenset({Signal.LORA_SIGNAL, Signal.CLASS_STATS})


@dataclass
class PhaseTimes:
    """Seconds, images and peak device memory (MiB, CUDA only) per phase of one round."""

    train_s: float = 0.0
    aggregate_s: float = 0.0
    eval_s: float = 0.0
    train_images: int = 0
    eval_images: int = 0
    peak_mem_mib: dict[str, float] = field(default_factory=dict)

    @property
    def train_images_per_s(self) -> float:
        return self.train_images / max(self.train_s, 1e-12)

    @property
    def eval_images_per_s(self) -> float:
        return self.eval_images / max(self.eval_s, 1e-12)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "train_images_per_s": self.train_images_per_s,
                "eval_images_per_s": self.eval_images_per_s}


class PhaseTimer:
    """Wall time of a block: CUDA events on CUDA (one sync at the end of the block), perf_counter on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0
        self.peak_mib: float | None = None

    def __enter__(self) -> PhaseTimer:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self._end.record()
            self._end.synchronize()
            self.seconds = self._start.elapsed_time(self._end) / 1000.0
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.seconds = time.perf_counter() - self._t0


def median_times(runs: list[PhaseTimes]) -> PhaseTimes | None:
    """Per-phase median over repeated rounds (None for a path that did not run)."""
    if not runs:
        return None

    def med(values: list[float]) -> float:
        return float(torch.tensor(values, dtype=torch.float64).median())

    peaks = {k: max(r.peak_mem_mib[k] for r in runs) for k in runs[0].peak_mem_mib}
    return PhaseTimes(med([r.train_s for r in runs]), med([r.aggregate_s for r in runs]), med([r.eval_s for r in runs]),
                      runs[0].train_images, runs[0].eval_images, peaks)
