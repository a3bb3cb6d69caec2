"""LoRA bookkeeping: grouping canonical keys into modules, and the one function computing B @ A.

Averaging the factors A and B separately is not averaging the products B_k A_k: the mean of products
includes cross terms the product of means lacks. Every aggregator says which it does; this module is
the single place where a LoRA update delta W = scale * B @ A is formed.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

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
