"""Gaussian noise on released tensors, and where it is drawn (central, distributed or local).

With sensitivity S of one client's contribution and noise multiplier z, the noise on the *sum* over the
round's clients must have std z * S. Where it is drawn:

- ``central``: the server adds N(0, (z S)^2) to the sum once (a trusted server);
- ``distributed``: each of the m clients adds N(0, (z S)^2 / m) to its own contribution; their sum has the
  central noise, but only the sum is private, so it needs secure aggregation (the server must not see
  a single contribution);
- ``local``: each client adds the full N(0, (z S)^2) to its own contribution, which is then private on
  its own, whatever the server does with it.

For a method whose server only sums (then divides by a public count), central noise on the sum and the
distributed noise split over the m contributions give the same distribution; the wrapper therefore adds
the central noise as m equal shares, one per contribution, so that a server optimiser (FedAdam, FedAvgM)
sees the noisy mean through its own code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

import torch
from torch import Tensor

Placement = Literal["central", "distributed", "local"]
PLACEMENTS: tuple[str, ...] = ("central", "distributed", "local")


def share_std(total_std: float, contributions: int, placement: Placement) -> float:
    """The std each contribution gets so that the noise meets ``placement`` (see above).

    Args:
        total_std: z * S, the std the noise on the sum needs (central, distributed) or each report (local).
        contributions: m, the contributions it is split over (>= 1).
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"noise placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    if contributions < 1:
        raise ValueError(f"noise is split over at least one contribution, got {contributions}")
    return total_std if placement == "local" else total_std / math.sqrt(contributions)


def gaussian_like(tensors: Mapping[str, Tensor], std: float, generator: torch.Generator,
                  keys: Iterable[str] | None = None) -> dict[str, Tensor]:
    """Independent N(0, std^2) noise shaped like ``tensors[k]`` for each key (float64, on each tensor's device).

    Drawn on the generator's device, key by key in the given order, so the noise depends only on the
    generator's state and the keys.
    """
    out = {}
    for k in (list(tensors) if keys is None else keys):
        t = tensors[k]
        z = torch.randn(t.shape, generator=generator, device=generator.device, dtype=torch.float64)
        out[k] = (z * std).to(t.device)
    return out


def add_noise(tensors: Mapping[str, Tensor], std: float, generator: torch.Generator,
              keys: Iterable[str] | None = None) -> dict[str, Tensor]:
    """``tensors`` with N(0, std^2) added to ``keys`` (default all), each kept in its dtype; std 0 adds nothing."""
    keys = list(tensors if keys is None else keys)
    out = dict(tensors)
    if std == 0:
        return out
    for k, z in gaussian_like(tensors, std, generator, keys).items():
        out[k] = (tensors[k].double() + z).to(tensors[k].dtype)
    return out
