"""``run_bench``: both paths (optimised, reference-style) on the same synthetic clients, in one process.

Round 0 is a discarded warm-up of every path; the timed rounds are interleaved, so that load from other
processes hits every path alike, and each phase reports its median over the repeats. Achieved TFLOP/s =
training FLOPs per image x images/s (end to end, augmentation and optimiser included), reported as a
percentage of an assumed peak (default 989 TFLOP/s: H100 SXM dense bf16).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from livar_bench.bench.flops import count_flops, fused_attention_enabled
from livar_bench.bench.optimised import run_optimised
from livar_bench.bench.reference import run_reference
from livar_bench.bench.settings import BenchSettings, make_workload
from livar_bench.bench.timing import PhaseTimes, median_times
from livar_bench.client.packed import resolve_pack
from livar_bench.data.transforms import DeviceTransform
from livar_bench.device import autocast_dtype, resolve_device
from livar_bench.errors import BenchError
from livar_bench.models import build_model
from livar_bench.models.sizes import effective_image_size
from livar_bench.resources import check_image_size, require_memory
from livar_bench.types import Signal

H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H100 SXM datasheet, dense BF16 tensor-core peak
# The reference computes LIVAR's path-integral signal and the class variances; both paths collect them.
BENCH_SIGNALS = frozenset({Signal.LORA_SIGNAL, Signal.CLASS_STATS})


def resolve(settings: BenchSettings) -> tuple[torch.device, torch.dtype | None]:
    """The benchmark's device and autocast dtype (None = fp32)."""
    device = resolve_device(settings.device)
    if settings.precision not in ("auto", "bf16", "fp32"):
        raise BenchError(f"--precision {settings.precision!r}: use auto, bf16 or fp32")
    return device, autocast_dtype(settings.precision, device)


def check_settings(settings: BenchSettings) -> None:
    """Refuse bad settings before anything is built or allocated.

    The settings a benchmark shares with a run are validated by ``RunSpec`` itself (the ranges, the method
    spec, the image size's patches) and the image size by the memory check ``run`` makes, so ``bench``
    refuses exactly what ``run`` refuses; the benchmark's own settings are checked here.
    """
    from livar_bench.config import make_spec

    if settings.repeats < 1:
        raise BenchError("--repeats must be at least 1")
    if settings.clients < 1 or settings.samples_per_client < 1 or settings.batch_size < 1 or settings.epochs < 1:
        raise BenchError("--clients, --samples-per-client, --batch-size and --epochs must be at least 1")
    if settings.num_classes < 1 or settings.eval_samples < 1:
        raise BenchError("--classes and --eval-samples must be at least 1")
    if not 0 < settings.peak_tflops < float("inf"):
        raise BenchError(f"--peak-tflops {settings.peak_tflops}: give the device's peak TFLOP/s, a positive "
                         "number (989 = H100 SXM bf16 dense)")
    make_spec({"dataset": "synthetic", "backbone": settings.backbone, "pretrained": settings.pretrained,
               "weights": settings.weights, "image_size": settings.image_size, "batch_size": settings.batch_size,
               "lora_rank": settings.lora_rank, "lora_alpha": settings.lora_alpha, "local_epochs": settings.epochs,
               "eval_batch_size": settings.eval_batch_size, "method": settings.method, "precision": settings.precision,
               "pack": settings.pack, "lr": settings.lr, "weight_decay": settings.weight_decay, "seed": settings.seed,
               "num_clients": settings.clients, "device": settings.device}, what="bench settings")
    check_image_size(settings.image_size, settings.batch_size, settings.eval_batch_size)  # the check `run` makes
    size = effective_image_size(settings.backbone, settings.image_size)
    images = settings.clients * settings.samples_per_client + settings.eval_samples
    require_memory(images * 3 * size * size, f"the synthetic workload ({images} images of {size}x{size} px)",
                   "use fewer --clients, --samples-per-client or --eval-samples, or a smaller --image-size")


def run_bench(settings: BenchSettings) -> dict[str, Any]:
    """Measure both paths on the same synthetic clients; a JSON-ready dictionary of the results."""
    check_settings(settings)
    device, dtype = resolve(settings)
    model, info = build_model(settings.backbone, settings.num_classes, rank=settings.lora_rank,
                              alpha=settings.lora_alpha, pretrained=settings.pretrained, image_size=settings.image_size,
                              weights=settings.weights)
    model.check_rank()  # as a run does: a rank above a layer's dimensions is refused, not timed
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
