"""LoRA bookkeeping: grouping canonical keys into modules, and the one function computing B @ A.

Averaging the factors A and B separately is not averaging the products B_k A_k: the mean of products
includes cross terms the product of means lacks. Every aggregator says which it does; this module is
the single place where a LoRA update delta W = scale * B @ A is formed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from livar_bench.ops.linalg import svd

LORA_A = "lora_A"
LORA_B = "lora_B"


def is_lora_key(key: str) -> bool:
    """True for canonical LoRA factor keys (``<module>.lora_A`` / ``<module>.lora_B``)."""
    return key.endswith("." + LORA_A) or key.endswith("." + LORA_B)


def lora_modules(keys: Iterable[str]) -> list[str]:
    """Module names that have both an A and a B factor among ``keys``, in first-seen order."""
    keys = list(keys)
    present = set(keys)
    modules: list[str] = []
    for key in keys:
        if key.endswith("." + LORA_A):
            module = key[: -len(LORA_A) - 1]
            if f"{module}.{LORA_B}" in present and module not in modules:
                modules.append(module)
    return modules


def factor_keys(module: str) -> tuple[str, str]:
    """(A key, B key) of a LoRA module."""
    return f"{module}.{LORA_A}", f"{module}.{LORA_B}"


def lora_delta(b: Tensor, a: Tensor, scale: float) -> Tensor:
    """The weight update of one LoRA module: scale * B @ A, shape [out, in] (B: [out, r], A: [r, in])."""
    return (b.float() @ a.float()) * scale


def init_lora_a(shape: tuple[int, ...] | torch.Size, generator: torch.Generator) -> Tensor:
    """A fresh LoRA A [r, in]: U(-1/sqrt(in), 1/sqrt(in)) = kaiming_uniform(a=sqrt(5)), PEFT's default,
    drawn from ``generator`` on its device."""
    bound = 1.0 / math.sqrt(shape[1])
    return (torch.rand(shape, generator=generator, device=generator.device) * 2 - 1) * bound


def weighted_product(bs: list[Tensor], as_: list[Tensor], weights: list[float], scales: list[float]) -> Tensor:
    """sum_k weights[k] * scales[k] * B_k @ A_k as one matmul, [out, in] float32.

    Stacking is what FLoRA sends: [w_1 s_1 B_1 | ... | w_K s_K B_K] [out, sum r_k] times
    [A_1; ...; A_K] [sum r_k, in]; clients may have different ranks r_k.
    """
    b_cat = torch.cat([b.float() * (w * s) for b, w, s in zip(bs, weights, scales, strict=True)], dim=1)
    a_cat = torch.cat([a.float() for a in as_], dim=0)
    return b_cat @ a_cat


def truncate_to_factors(delta: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """The best rank-``rank`` factorisation (B [out, rank], A [rank, in]) of ``delta`` [out, in] in the
    Frobenius norm (truncated SVD, singular values split evenly: B = U S^1/2, A = S^1/2 V^T).

    Columns beyond the matrix rank are zero. Used by product-space merges to return to LoRA factors.
    """
    u, s, vh = svd(delta.double())
    k = min(rank, s.numel())
    root = s[:k].sqrt()
    b = torch.zeros(delta.shape[0], rank, dtype=torch.float64, device=delta.device)
    a = torch.zeros(rank, delta.shape[1], dtype=torch.float64, device=delta.device)
    b[:, :k] = u[:, :k] * root
    a[:k] = root[:, None] * vh[:k]
    return b.float(), a.float()


def to_factors(dense: dict[str, Tensor], params: dict[str, Tensor], scale: float) -> dict[str, Tensor]:
    """{module: target update scale * B A [out, in]} -> {factor key: tensor}, each module's target truncated
    to the rank of ``params``' factors (the global rank) by SVD, in the factors' dtypes."""
    out = {}
    for module, target in dense.items():
        a_key, b_key = factor_keys(module)
        b, a = truncate_to_factors(target / scale, params[a_key].shape[0])
        out[a_key] = a.to(device=params[a_key].device, dtype=params[a_key].dtype)
        out[b_key] = b.to(device=params[b_key].device, dtype=params[b_key].dtype)
    return out
