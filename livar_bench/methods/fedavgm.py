"""FedAvgM: FedAvg with server momentum (Hsu et al., 2019, arXiv 1909.06335; in the form of Reddi et al.,
2021, arXiv 2003.00295, sec. 3).

With x the global tensors and delta_t = (sample-weighted FedAvg of the clients) - x_t:

    m_t     = momentum * m_{t-1} + delta_t        (m_{-1} = 0)
    x_{t+1} = x_t + eta * m_t

``eta = 1, momentum = 0`` is FedAvg up to float32 rounding (x + (mean - x) rounds twice). The velocity m is server state (``ServerState.buffers``,
key ``<namespace>.m.<param>``, float32): checkpointed, so a resumed run continues exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, ClassVar

import torch
from pydantic import Field

from livar_bench.methods.base import Aggregator
from livar_bench.methods.buffers import per_tensor
from livar_bench.methods.describe import describe
from livar_bench.methods.fedopt import pseudo_gradient
from livar_bench.types import ClientUpdate, RoundContext, ServerState


@describe("fedavgm", paper="https://arxiv.org/abs/1909.06335", label="FedAvgM", order=12, card="fedopt",
          summary="FedAvg with server momentum: x + eta * m, m = momentum * m + (FedAvg - x).")
class FedAvgM(Aggregator):
    """x + eta * m with m = momentum * m + (FedAvg - x)."""

    server_moments: ClassVar[bool] = True

    def secure_aggregation(self) -> tuple[str, str]:
        return "sum", "a server optimiser step on the sample-weighted mean update"

    eta: Annotated[float, Field(gt=0, description="server learning rate (1 with momentum 0 is FedAvg)")] = 1.0
    momentum: Annotated[float, Field(ge=0, lt=1, description="server momentum, the share of the velocity m "
                                                              "carried into the next round")] = 0.9

    def server_step(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext) -> ServerState:
        delta = pseudo_gradient(state, updates)

        def step(key: str, x: torch.Tensor, buffers: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
            m = self.momentum * buffers["m"] + delta[key]
            return x + self.eta * m, {"m": m}

        return per_tensor(state, self.namespace, {"m": torch.zeros_like}, step)
