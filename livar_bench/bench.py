"""``livar-bench bench``: how fast is local training, aggregation and evaluation, and why.

Two paths run on the same synthetic clients in the same process:

- **optimised**: the real code path (client/train.py, federation's data layout): uint8 images resident
  on the device, batched augmentation on the device, bf16 autocast and fused AdamW on CUDA, signals
  accumulated on the device (no host synchronisation inside the step), one shared model whose
  trainable tensors are swapped in place per client.
- **reference**: what the LIVAR reference code does per step, written here as a yardstick: fp32, a
  ``copy.deepcopy`` of the model per client and of its whole state dict per step, per-step ``.cpu()``
  copies to compute the path-integral signal and read the loss, per-sample PNG decode + resize +
  torchvision augmentation in one process, and dense merged weights on the server.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on one real forward+backward step.
Training FLOPs per image with a frozen backbone are about 2x the forward FLOPs, not the 3x of full
fine-tuning: backward needs the activation gradients (about one forward's worth of matmuls) but the
weight gradients only of the small LoRA factors and the head. Achieved TFLOP/s = training FLOPs per
image x images/s (end to end, augmentation and optimiser included), reported as a percentage of an
assumed peak (default 989 TFLOP/s: H100 SXM dense bf16).

Attention: timm's ``Attention`` calls ``F.scaled_dot_product_attention`` when its ``fused_attn`` flag is
set (timm's default; ``TIMM_FUSED_ATTN=0`` turns it off), which picks the flash / memory-efficient
kernels on CUDA; PEFT only wraps the qkv/proj linears, so the flag survives LoRA injection. The bench
reports it (``fused_attention``). FLOPs are counted with the flag off, as explicit matmuls, because
FlopCounterMode has no formula for the CPU SDPA kernel (the FLOPs are the same either way).
"""

from __future__ import annotations

import copy
import io
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from livar_bench.client.packed import resolve_pack
from livar_bench.client.phase import train_clients
from livar_bench.client.signals import class_statistics
from livar_bench.client.train import LocalSettings, evaluate
from livar_bench.data.base import ImageSplit
from livar_bench.data.transforms import DeviceTransform
from livar_bench.errors import BenchError
from livar_bench.methods.spec import MethodSpec
from livar_bench.models import LoraViT, build_model
from livar_bench.types import ClientUpdate, Params, RoundContext, Signal

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


# --- synthetic workload ------------------------------------------------------------------------------
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


# --- FLOPs -------------------------------------------------------------------------------------------
def count_flops(model: LoraViT, input_size: int, device: torch.device, batch: int = 2) -> tuple[float, float]:
    """(training FLOPs per image, forward FLOPs per image) counted on one real step of ``batch`` images.

    The count is taken in fp32 so that it does not depend on autocast; the matmul count is the same.
    """
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(batch, 3, input_size, input_size, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    # Count attention as explicit matmuls: FlopCounterMode has formulas for the CUDA SDPA kernels but not
    # for the CPU one, and the count must not depend on which kernel runs (the FLOPs are the same).
    attn = [m for m in model.net.modules() if hasattr(m, "fused_attn")]
    fused = [m.fused_attn for m in attn]
    try:
        for m in attn:
            m.fused_attn = False
        model.train()
        with FlopCounterMode(display=False) as counter:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
        train = counter.get_total_flops() / batch
        for p in model.trainable.values():
            p.grad = None
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for m, flag in zip(attn, fused, strict=True):
            m.fused_attn = flag
    return train, counter.get_total_flops() / batch


def fused_attention_enabled(model: LoraViT) -> bool:
    """Whether every timm attention block calls ``F.scaled_dot_product_attention`` (flash/mem-efficient)."""
    flags = [m.fused_attn for m in model.net.modules() if hasattr(m, "fused_attn")]
    return bool(flags) and all(flags)


# --- optimised path ----------------------------------------------------------------------------------
def run_optimised(model: LoraViT, start: Params, work: Workload, tf: DeviceTransform, settings: BenchSettings,
                  device: torch.device, dtype: torch.dtype | None, pack: int = 1) -> PhaseTimes:
    """One round through the real client/train.py path (client/packed.py with ``pack`` > 1)."""
    method = MethodSpec.parse(settings.method).build()
    local = LocalSettings(settings.epochs, settings.batch_size, settings.lr, settings.weight_decay, dtype)
    clients = [c.to(device) for c in work.clients]
    test = work.test.to(device)
    requires = BENCH_SIGNALS | method.requires

    def train_round() -> list[ClientUpdate]:  # the client phase of `run` (client/phase.py), same seeding
        results = train_clients(model, start, dict(enumerate(clients)), tf, method.objective, local,
                                seed=settings.seed, round_=1, num_classes=settings.num_classes, requires=requires,
                                pack=pack)
        return [results[k].update for k in range(len(clients))]

    times = PhaseTimes()
    with PhaseTimer(device) as t:
        updates = train_round()
    times.train_s, times.train_images = t.seconds, settings.epochs * sum(len(c) for c in clients)
    if t.peak_mib is not None:
        times.peak_mem_mib["train"] = t.peak_mib
    ctx = RoundContext(round=1, num_rounds=1, num_classes=settings.num_classes, lora_scale=model.scale,
                       generator=torch.Generator(device=device).manual_seed(settings.seed), device=device)
    with PhaseTimer(device) as t:
        new = method.server_step(method.init_state(start), updates, ctx).params
    times.aggregate_s = t.seconds
    if t.peak_mib is not None:
        times.peak_mem_mib["aggregate"] = t.peak_mib
    with PhaseTimer(device) as t:
        evaluate(model, new, test, tf, settings.eval_batch_size, dtype)
    times.eval_s, times.eval_images = t.seconds, len(test)
    if t.peak_mib is not None:
        times.peak_mem_mib["eval"] = t.peak_mib
    return times


# --- reference-style path ----------------------------------------------------------------------------
def encode_png(split: ImageSplit) -> list[bytes]:
    """Each image as PNG bytes: the reference decodes image files every epoch."""
    from PIL import Image

    out = []
    for img in split.images.permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=1)
        out.append(buf.getvalue())
    return out


def reference_transforms(size: int, mean: tuple[float, ...], std: tuple[float, ...]):
    """Per-sample torchvision pipelines as in the reference: resize once per sample (bicubic), then
    RandomResizedCrop + flip for training, Resize(256/224) + CenterCrop for testing."""
    from torchvision import transforms as T

    bicubic = T.InterpolationMode.BICUBIC
    base = [T.Resize((size, size), interpolation=bicubic)]
    train = T.Compose([*base, T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    test = T.Compose([*base, T.Resize(int(round(size / 0.875))), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(mean, std)])
    return train, test


def _decode_batch(pngs: list[bytes], index: list[int], transform) -> Tensor:
    from PIL import Image

    return torch.stack([transform(Image.open(io.BytesIO(pngs[i])).convert("RGB")) for i in index])


def run_reference(model: LoraViT, start: Params, work: Workload, tf: DeviceTransform, settings: BenchSettings,
                  device: torch.device) -> PhaseTimes:
    """One round the way the reference code does it (see the module docstring)."""
    train_tf, test_tf = reference_transforms(tf.size, tf.mean, tf.std)
    client_pngs = [encode_png(c) for c in work.clients]  # the "image files" (not timed)
    test_pngs = encode_png(work.test)
    lora_keys = [k for k in model.trainable if ".lora_" in k]
    times = PhaseTimes()
    # torchvision's random transforms draw from the global RNG; fork it so the bench leaves it untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        with PhaseTimer(device) as t:
            client_models = []
            for k, pngs in enumerate(client_pngs):
                client_models.append(_reference_client(model, start, pngs, work.clients[k].labels, train_tf, test_tf,
                                                       lora_keys, settings, device))
        times.train_s, times.train_images = t.seconds, settings.epochs * sum(len(c) for c in work.clients)
        if t.peak_mib is not None:
            times.peak_mem_mib["train"] = t.peak_mib
        with PhaseTimer(device) as t:
            merged = _reference_aggregate(model, client_models, [len(c) for c in work.clients])
        times.aggregate_s = t.seconds
        if t.peak_mib is not None:
            times.peak_mem_mib["aggregate"] = t.peak_mib
        del client_models
        with PhaseTimer(device) as t:
            _reference_eval(merged, test_pngs, work.test.labels, test_tf, settings.eval_batch_size, device)
        times.eval_s, times.eval_images = t.seconds, len(work.test)
        if t.peak_mib is not None:
            times.peak_mem_mib["eval"] = t.peak_mib
    return times


def _reference_client(model: LoraViT, start: Params, pngs: list[bytes], labels: Tensor, train_tf, test_tf,
                      lora_keys: list[str], settings: BenchSettings, device: torch.device) -> LoraViT:
    local = copy.deepcopy(model)  # a full model copy per client
    local.load_params(start)
    local.train()
    params = [local.trainable[k] for k in local.trainable]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    signal = dict.fromkeys(lora_keys, 0.0)
    losses = []
    n = len(pngs)
    for _ in range(settings.epochs):
        order = torch.randperm(n).tolist()
        for begin in range(0, n, settings.batch_size):
            index = order[begin : begin + settings.batch_size]
            x = _decode_batch(pngs, index, train_tf).to(device)
            y = labels[index].to(device)
            loss = torch.nn.functional.cross_entropy(local(x), y)
            loss.backward()
            before = copy.deepcopy(local.state_dict())  # the reference snapshots the whole state every step
            before_lora = {k: local.trainable[k].detach().cpu().clone() for k in lora_keys}
            optimizer.step()
            for k in lora_keys:  # two blocking device-to-host copies per factor per step
                p = local.trainable[k]
                s = (p.grad.cpu() * (before_lora[k] - p.detach().cpu())).sum()
                signal[k] += abs(float(s))
            optimizer.zero_grad()
            losses.append(loss.item())
            del before
    # Class variances with the final local model: per-sample decode again, fp32, features to the host.
    local.eval()
    feats = []
    with torch.no_grad():
        for begin in range(0, n, 256):
            x = _decode_batch(pngs, list(range(begin, min(n, begin + 256))), test_tf).to(device)
            feats.append(local.features(x).cpu())
    f = torch.cat(feats)
    class_statistics(f, labels, torch.ones(n, dtype=torch.bool), settings.num_classes)
    return local


@torch.no_grad()
def _reference_aggregate(model: LoraViT, clients: list[LoraViT], sizes: list[int]) -> LoraViT:
    """Sample-weighted mean of A, B and head, plus the dense merged weights W0 + s * sum_k w_k B_k A_k that
    the reference evaluates (materialised per module)."""
    total = float(sum(sizes))
    weights = [n / total for n in sizes]
    merged = copy.deepcopy(model)
    avg = {k: sum(w * c.trainable[k].detach() for w, c in zip(weights, clients, strict=True)) for k in model.trainable}
    merged.load_params(avg)
    lora_modules = {name: mod for name, mod in merged.net.named_modules() if hasattr(mod, "lora_A") and hasattr(mod, "base_layer")}
    for name, mod in lora_modules.items():
        key = name  # canonical key prefix, e.g. blocks.0.attn.qkv
        delta = sum(w * (c.trainable[f"{key}.lora_B"] @ c.trainable[f"{key}.lora_A"]) for w, c in zip(weights, clients, strict=True))
        mod.base_layer.weight += merged.scale * delta
        merged.trainable[f"{key}.lora_B"].zero_()  # the merged delta now lives in the dense weight
    return merged


@torch.no_grad()
def _reference_eval(model: LoraViT, pngs: list[bytes], labels: Tensor, test_tf, batch_size: int,
                    device: torch.device) -> float:
    model.eval()
    correct = 0
    for begin in range(0, len(pngs), batch_size):
        index = list(range(begin, min(len(pngs), begin + batch_size)))
        logits = model(_decode_batch(pngs, index, test_tf).to(device)).cpu()
        correct += int((logits.argmax(1) == labels[index]).sum())
    return correct / max(len(pngs), 1)


# --- the benchmark -----------------------------------------------------------------------------------
def resolve(settings: BenchSettings) -> tuple[torch.device, torch.dtype | None]:
    from livar_bench.federation import resolve_device

    device = resolve_device(settings.device)
    if settings.precision not in ("auto", "bf16", "fp32"):
        raise BenchError(f"--precision {settings.precision!r}: use auto, bf16 or fp32")
    if settings.precision == "fp32" or (settings.precision == "auto" and device.type != "cuda"):
        return device, None
    return device, torch.bfloat16


def median_times(runs: list[PhaseTimes]) -> PhaseTimes | None:
    """Per-phase median over repeated rounds (None for a path that did not run)."""
    if not runs:
        return None

    def med(values: list[float]) -> float:
        return float(torch.tensor(values, dtype=torch.float64).median())

    peaks = {k: max(r.peak_mem_mib[k] for r in runs) for k in runs[0].peak_mem_mib}
    return PhaseTimes(med([r.train_s for r in runs]), med([r.aggregate_s for r in runs]), med([r.eval_s for r in runs]),
                      runs[0].train_images, runs[0].eval_images, peaks)


def run_bench(settings: BenchSettings) -> dict[str, Any]:
    """Measure both paths on the same synthetic clients; a JSON-ready dictionary of the results."""
    if settings.repeats < 1:
        raise BenchError("--repeats must be at least 1")
    if settings.clients < 1 or settings.samples_per_client < 1 or settings.batch_size < 1 or settings.epochs < 1:
        raise BenchError("--clients, --samples-per-client, --batch-size and --epochs must be at least 1")
    device, dtype = resolve(settings)
    model, info = build_model(settings.backbone, settings.num_classes, rank=settings.lora_rank,
                              alpha=settings.lora_alpha, pretrained=settings.pretrained, image_size=settings.image_size,
                              weights=settings.weights)
    model.to(device)
    start = {k: v.to(device) for k, v in model.initial_params(torch.Generator().manual_seed(settings.seed)).items()}
    with torch.no_grad():  # non-zero B so the LoRA path does real work in the reference's dense merge too
        for k in start:
            if k.endswith(".lora_B"):
                start[k] = torch.full_like(start[k], 1e-3)
    tf = DeviceTransform(info.input_size, info.mean, info.std)
    work = make_workload(settings, info.input_size)
    train_flops, fwd_flops = count_flops(model, info.input_size, device)
    # Compilation is lazy: its cost lands in the optimised path's warm-up step, which is not timed.
    compiled = torch.compile(model.features) if settings.compile else None
    pack = resolve_pack(settings.pack, device, settings.clients)
    runs: dict[str, list[PhaseTimes]] = {"optimised": [], "packed": [], "reference": []}
    # Round 0 is a discarded warm-up of every path (kernel selection for each new shape, allocator, lazy
    # compilation); the timed rounds are interleaved, so that load from other processes hits every path alike.
    for _ in range(settings.repeats + 1):
        if compiled is not None:
            model.features = compiled  # an instance attribute shadows the method
        runs["optimised"].append(run_optimised(model, start, work, tf, settings, device, dtype))
        if compiled is not None:
            del model.features  # back to eager: packing patches module forwards, the reference runs eager
        if pack > 1:
            runs["packed"].append(run_optimised(model, start, work, tf, settings, device, dtype, pack))
        if settings.reference:
            runs["reference"].append(run_reference(model, start, work, tf, settings, device))
    optimised, packed, reference = (median_times(runs[k][1:]) for k in ("optimised", "packed", "reference"))
    achieved = train_flops * optimised.train_images_per_s / 1e12
    result: dict[str, Any] = {
        "settings": asdict(settings),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": "bf16" if dtype is not None else "fp32",
        "input_size": info.input_size,
        "trainable_params": sum(p.numel() for p in model.trainable.values()),
        "fused_attention": fused_attention_enabled(model),
        "flops": {
            "train_per_image": train_flops,
            "forward_per_image": fwd_flops,
            "train_over_forward": train_flops / max(fwd_flops, 1.0),
            "formula": "train ~ forward + activation-gradient backward (~2x forward; LoRA/head weight "
                       "gradients are small); counted with FlopCounterMode on one real step",
        },
        "achieved_train_tflops": achieved,
        "peak_tflops_assumed": settings.peak_tflops,
        "percent_of_peak": 100.0 * achieved / settings.peak_tflops,
        "achieved_train_tflops_packed": train_flops * packed.train_images_per_s / 1e12 if packed else None,
        "optimised": optimised.as_dict(),
        "pack": pack,
        "packed": packed.as_dict() if packed else None,
        "reference": reference.as_dict() if reference else None,
    }
    if reference is not None:
        result["speedup"] = {
            "train_images_per_s": optimised.train_images_per_s / max(reference.train_images_per_s, 1e-12),
            "eval_images_per_s": optimised.eval_images_per_s / max(reference.eval_images_per_s, 1e-12),
            "round_time": (reference.train_s + reference.aggregate_s + reference.eval_s)
            / max(optimised.train_s + optimised.aggregate_s + optimised.eval_s, 1e-12),
        }
        if packed is not None:
            result["speedup"]["packed_train_images_per_s"] = (
                packed.train_images_per_s / max(reference.train_images_per_s, 1e-12))
    return result
