"""FedAvgM: FedAvg with server momentum (Hsu et al., 2019, arXiv 1909.06335; in the form of Reddi et al.,
2021, arXiv 2003.00295, sec. 3).

With x the global tensors and delta_t = (sample-weighted FedAvg of the clients) - x_t:

    m_t     = momentum * m_{t-1} + delta_t        (m_{-1} = 0)
    x_{t+1} = x_t + eta * m_t

``eta = 1, momentum = 0`` is FedAvg exactly. The velocity m is server state (``ServerState.buffers``,
key ``fedavgm.m.<param>``, float32): checkpointed, so a resumed run continues exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from livar_bench.methods.base import Aggregator
from livar_bench.methods.fedopt import pseudo_gradient
from livar_bench.types import ClientUpdate, RoundContext, ServerState


@dataclass(frozen=True)
class FedAvgM(Aggregator):
    """x + eta * m with m = momentum * m + (FedAvg - x)."""

    eta: float = 1.0
    momentum: float = 0.9

    def __post_init__(self) -> None:
        if not (math.isfinite(self.eta) and self.eta > 0):
            raise ValueError(f"eta must be a positive number, got {self.eta}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    def server_step(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext) -> ServerState:
        delta = pseudo_gradient(state, updates)
        buffers, params = dict(state.buffers), {}
        for key, x in state.params.items():
            m = self.momentum * buffers.get(f"fedavgm.m.{key}", torch.zeros_like(delta[key])) + delta[key]
            buffers[f"fedavgm.m.{key}"] = m
            params[key] = (x.float() + self.eta * m).to(x.dtype)
        return state.evolve(params=params, buffers=buffers)
