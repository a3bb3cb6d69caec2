"""Server optimisers of "Adaptive Federated Optimization" (Reddi et al., ICLR 2021, arXiv 2003.00295).

The server treats the round's change as a pseudo-gradient and steps with its own optimiser. With x the
global tensors and the sample-weighted FedAvg of the clients' tensors (LoRA factors A and B separately,
and the head), per tensor and element (Algorithm 2 of the paper):

    delta_t = fedavg_t - x_t
    m_t     = beta1 * m_{t-1} + (1 - beta1) * delta_t          (m_{-1} = 0)
    v_t     = second-moment update of the subclass               (v_{-1} = tau^2)
    x_{t+1} = x_t + eta * m_t / (sqrt(v_t) + tau)

FedAdagrad: v_t = v_{t-1} + delta_t^2; FedAdam: v_t = beta2 v_{t-1} + (1 - beta2) delta_t^2; FedYogi:
v_t = v_{t-1} - (1 - beta2) delta_t^2 sign(v_{t-1} - delta_t^2). As in the paper there is no bias
correction, and v starts at tau^2 (the paper asks for v_{-1} >= tau^2). m and v are server state
(``ServerState.buffers``, keys ``<method>.m.<param>`` and ``<method>.v.<param>``, float32), so they
are checkpointed and a resumed run continues exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from livar_bench.methods.base import Aggregator
from livar_bench.ops.weighted import sample_weights, weighted_average_params
from livar_bench.types import ClientUpdate, Params, RoundContext, ServerState


def pseudo_gradient(state: ServerState, updates: Sequence[ClientUpdate]) -> Params:
    """delta = sample-weighted FedAvg of the clients' tensors - the global tensors (float32)."""
    merged = weighted_average_params([u.params for u in updates], sample_weights([u.num_samples for u in updates]),
                                     keys=state.params)
    return {k: merged[k].float() - v.float() for k, v in state.params.items()}


@dataclass(frozen=True)
class FedOpt(Aggregator):
    """Adaptive server step on the FedAvg pseudo-gradient; subclasses give the second-moment update."""

    eta: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    prefix: ClassVar[str] = "fedopt"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.eta) and self.eta > 0):
            raise ValueError(f"eta must be a positive number, got {self.eta}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"tau must be a positive number, got {self.tau}")

    def second_moment(self, v: Tensor, d2: Tensor) -> Tensor:
        raise NotImplementedError

    def server_step(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext) -> ServerState:
        delta = pseudo_gradient(state, updates)
        buffers, params = dict(state.buffers), {}
        for key, x in state.params.items():
            m_key, v_key = f"{self.prefix}.m.{key}", f"{self.prefix}.v.{key}"
            m = buffers.get(m_key, torch.zeros_like(delta[key]))
            v = buffers.get(v_key, torch.full_like(delta[key], self.tau**2))
            m = self.beta1 * m + (1 - self.beta1) * delta[key]
            v = self.second_moment(v, delta[key] * delta[key])
            buffers[m_key], buffers[v_key] = m, v
            params[key] = (x.float() + self.eta * m / (v.sqrt() + self.tau)).to(x.dtype)
        return state.evolve(params=params, buffers=buffers)
