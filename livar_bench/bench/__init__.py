"""``livar-bench bench`` and ``bench-server``: how fast is local training, aggregation and evaluation, and why.

    settings    what is measured, the synthetic clients
    timing      per-phase times, peak memory, medians over repeats
    flops       FLOPs of one training step; fused attention
    optimised   the real client phase, timed
    reference   the reference code's per-step behaviour, as a yardstick
    run         ``run_bench``: both paths on the same clients in one process
    server      ``bench-server``: server-side aggregation time and memory per method at scale

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

from livar_bench.bench.run import run_bench
from livar_bench.bench.settings import (
    BENCH_SIGNALS,
    H100_BF16_DENSE_TFLOPS,
    BenchSettings,
    Workload,
    make_workload,
)

__all__ = ["BENCH_SIGNALS", "H100_BF16_DENSE_TFLOPS", "BenchSettings", "Workload", "make_workload", "run_bench"]
