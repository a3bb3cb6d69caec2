"""Clipping of a client's contribution: a fixed L2 bound, or one that adapts to a quantile of the norms.

Fixed (DP-FedAvg, McMahan et al. 2018, arXiv 1710.06963): the client's update u = theta_k - theta_global
over the released keys is scaled to an L2 norm of at most C,

    clip(u) = u * min(1, C / ||u||_2)

computed in float64 exactly as the ``clip`` stage computes it for the round's global update
(``methods/clip.py``), so that the two agree bit for bit on the same update.

Adaptive (Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping", arXiv
1905.03871, Alg. 1 with the geometric update): each sampled client also reports b_k = 1[||u_k|| <= C];
the server releases the noisy fraction b = (sum_k b_k + N(0, sigma_b^2)) / m (m: clients per round,
fixed or expected) and moves the bound towards the gamma-quantile of the norms:

    C <- C * exp(-eta * (b - gamma))

The count is a release of its own: centred (b_k - 1/2, as in the paper) its sensitivity is 1/2, so its
noise multiplier is 2 sigma_b, and the accountant composes it with the update's (``accountant``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from livar_bench.errors import BenchError


def check_bound(name: str, value: float) -> float:
    """A clipping bound: finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise BenchError(f"{name} must be a clipping bound > 0, got {value!r}")
    return float(value)


def delta_norm(base: Mapping[str, Tensor], params: Mapping[str, Tensor], keys: Iterable[str]) -> Tensor:
    """||params - base||_2 over ``keys`` (0-dim float64)."""
    steps = [params[k].double() - base[k].double() for k in keys]
    return torch.sqrt(sum((s * s).sum() for s in steps)) if steps else torch.zeros((), dtype=torch.float64)


def clip_factor(norm: Tensor, bound: float) -> Tensor:
    """min(1, bound / norm) as a 0-dim float64 tensor (1 for a zero norm)."""
    if norm > 0:
        return torch.clamp(bound / norm, max=1.0)
    return torch.ones((), dtype=torch.float64, device=norm.device)


def clip_params(base: Mapping[str, Tensor], params: Mapping[str, Tensor], bound: float,
                keys: Iterable[str] | None = None) -> tuple[dict[str, Tensor], Tensor]:
    """(``base + clip(params - base)`` over ``keys`` (others unchanged), the norm before clipping).

    Args:
        base: the round's global tensors.
        params: a client's tensors after local training.
        bound: C.
        keys: the released keys (default: all of ``base``).
    """
    keys = list(base if keys is None else keys)
    steps = {k: params[k].double() - base[k].double() for k in keys}
    norm = torch.sqrt(sum((s * s).sum() for s in steps.values())) if steps else torch.zeros((), dtype=torch.float64)
    factor = clip_factor(norm, bound)
    out = dict(params)
    for k, s in steps.items():
        out[k] = (base[k].double() + s * factor).to(base[k].dtype)
    return out, norm


def clip_vector(values: Tensor, bound: float) -> Tensor:
    """``values`` scaled to an L2 norm (over all entries) of at most ``bound``, in float64."""
    v = values.double()
    return v * clip_factor(torch.linalg.vector_norm(v), bound)


@dataclass(frozen=True)
class QuantileClip:
    """Andrew et al.'s adaptive bound: geometric steps towards the ``target`` quantile of update norms.

    Attributes:
        target: gamma, the fraction of clients whose update should be unclipped (0 < gamma < 1).
        lr: eta, the step of log C per unit of (b - gamma) (> 0; the paper uses 0.2).
        count_std: sigma_b, the std of the noise on the unclipped count (> 0).
    """

    target: float = 0.5
    lr: float = 0.2
    count_std: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.target, (int, float)) and 0 < self.target < 1):
            raise BenchError(f"clip quantile must be in (0, 1), got {self.target!r}")
        check_bound("clip learning rate", self.lr)
        check_bound("clip count noise std", self.count_std)

    @property
    def count_multiplier(self) -> float:
        """Noise multiplier of the count release: sigma_b over its centred sensitivity 1/2."""
        return 2.0 * self.count_std

    def next_bound(self, bound: float, norms: Tensor, per_round: float, generator: torch.Generator) -> tuple[float, float]:
        """(the next round's bound, the noisy unclipped fraction b released this round).

        Args:
            bound: this round's C.
            norms: [n] the sampled clients' update norms before clipping.
            per_round: m, the fixed (or expected) number of clients per round: the fraction's denominator.
            generator: the server's stream (the count's noise).
        """
        unclipped = (norms <= bound).double().sum()
        noise = torch.randn((), generator=generator, device=generator.device, dtype=torch.float64)
        fraction = float((unclipped + self.count_std * noise.to(unclipped.device)) / per_round)
        return bound * math.exp(-self.lr * (fraction - self.target)), fraction
