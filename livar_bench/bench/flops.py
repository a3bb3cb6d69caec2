"""FLOPs of one training step, counted with ``torch.utils.flop_counter.FlopCounterMode``, and whether
attention runs through PyTorch's fused SDPA kernels.

Training FLOPs per image with a frozen backbone are about 2x the forward FLOPs, not the 3x of full
fine-tuning: backward needs the activation gradients (about one forward's worth of matmuls) but the
weight gradients only of the small LoRA factors and the head. FLOPs are counted with timm's fused
attention off, as explicit matmuls, because FlopCounterMode has no formula for the CPU SDPA kernel (the
FLOPs are the same either way).
"""

from __future__ import annotations

import torch

from livar_bench.models import LoraViT
from livar_bench.types import Signal

H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H100 SXM datasheet, dense BF16 tensor-core peak
# The reference computes LIVAR's path-integral signal and the class variances; both paths collect them.
BENCH_SIGNALS = frozenset({Signal.LORA_SIGNAL, Signal.CLASS_STATS})


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
