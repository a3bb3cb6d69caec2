"""DARE, "Drop And REscale" (Yu et al., ICML 2024, arXiv 2311.03099, sec. 4.1).

Each entry of each task vector is dropped independently with probability p and the survivors are divided
by 1 - p, so that the expectation of every entry is unchanged: E[m tau / (1 - p)] = tau for m ~ Bernoulli(1 - p).
The drop mask is drawn from the caller's generator only (the server's stream of the round), so a resumed
run draws the same masks.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_drop(drop: float) -> None:
    """A drop rate must be in [0, 1): at 1 nothing survives and the rescale divides by zero."""
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"drop must be in [0, 1), got {drop}")


def dare_keep_mask(shape: torch.Size | tuple[int, ...], drop: float, generator: torch.Generator) -> Tensor:
    """Bernoulli(1 - drop) keep mask: entry kept where a uniform draw in [0, 1) is at least ``drop``.

    FusionBench keeps ``rand > p``; the two differ only on a draw exactly equal to p (probability 0).
    """
    check_drop(drop)
    return torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64) >= drop


def dare(taus: Tensor, drop: float, generator: torch.Generator, rescale: bool = True) -> tuple[Tensor, Tensor]:
    """(dropped and rescaled task vectors, keep mask), both shaped like ``taus`` [K, *shape].

    With ``rescale=False`` survivors keep their value (the paper's "drop only" ablation).
    """
    keep = dare_keep_mask(taus.shape, drop, generator).to(taus.device)
    out = torch.where(keep, taus, torch.zeros_like(taus))
    if rescale and drop > 0:
        out = out / (1.0 - drop)
    return out, keep
