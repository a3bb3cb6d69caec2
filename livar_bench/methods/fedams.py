"""FedAMS: AMSGrad with max stabilisation on the server (Wang, Lin, Chen, ICML 2022, arXiv 2205.02719).

Per global tensor x, with delta_t = (sample-weighted FedAvg of the clients) - x_t and t the round:

    m_t     = beta1 * m_{t-1} + (1 - beta1) * delta_t                 m_0 = 0
    v_t     = beta2 * v_{t-1} + (1 - beta2) * delta_t^2               v_0 = 0
    vhat_t  = max(vhat_{t-1}, v_t)                                    vhat_0 = vhat_init
    x_{t+1} = x_t + eta / c1 * m_t / (sqrt(vhat_t / c2) + eps)

with c1 = 1 - beta1^t, c2 = 1 - beta2^t (``bias_correction``, as the authors' code does) or 1. FedAMS
starts vhat at its stabiliser (vhat_t = max(vhat_{t-1}, v_t, vhat_init)) and adds nothing; FedAMSGrad,
registered as a preset, starts vhat at 0 and adds eps. m, v and vhat are server state, three buffers
per tensor under this component's namespace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from livar_bench.methods.base import Aggregator
from livar_bench.methods.buffers import per_tensor
from livar_bench.methods.describe import describe
from livar_bench.methods.fedopt import pseudo_gradient
from livar_bench.types import ClientUpdate, RoundContext, ServerState


@describe("fedams", paper="https://arxiv.org/abs/2205.02719", label="FedAMS", order=19,
          summary="AMSGrad server optimiser with max stabilisation on the FedAvg pseudo-gradient (Wang et al.).")
class FedAMS(Aggregator):
    """x + eta * m / sqrt(max over rounds of v, and at least vhat_init)."""

    server_moments: ClassVar[bool] = True  # m and v take every round's step (so `clip` cannot follow it)

    eta: Annotated[float, Field(gt=0, description="server learning rate")] = 1e-2
    beta1: Annotated[float, Field(ge=0, lt=1, description="decay of the first moment m")] = 0.9
    beta2: Annotated[float, Field(ge=0, lt=1, description="decay of the second moment v")] = 0.99
    vhat_init: Annotated[float, Field(ge=0, description="start of the running maximum vhat of v, the max "
                                                        "stabilisation (0 for FedAMSGrad)")] = 1e-3
    eps: Annotated[float, Field(ge=0, description="added to the denominator sqrt(vhat) (FedAMSGrad's "
                                                  "stabilisation; 0 for FedAMS)")] = 0.0
    bias_correction: Annotated[bool, Field(description="divide by 1 - beta^t as Adam does (the authors' "
                                                       "code)")] = True

    def __post_init__(self) -> None:
        if self.vhat_init == 0 and self.eps == 0:
            raise ValueError("vhat_init and eps are both 0: a tensor that never changes would divide 0 by 0; "
                             "set vhat_init (FedAMS) or eps (FedAMSGrad) above 0")

    def secure_aggregation(self) -> tuple[str, str]:  # the server needs only the mean: SecAgg, central DP
        return "sum", "a server optimiser step on the sample-weighted mean update"

    def server_step(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext) -> ServerState:
        delta = pseudo_gradient(state, updates)
        c1, c2 = (1 - self.beta1**ctx.round, 1 - self.beta2**ctx.round) if self.bias_correction else (1.0, 1.0)

        def step(key: str, x: Tensor, buffers: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
            m = self.beta1 * buffers["m"] + (1 - self.beta1) * delta[key]
            v = self.beta2 * buffers["v"] + (1 - self.beta2) * delta[key] ** 2
            vhat = torch.maximum(buffers["vhat"], v)
            return x + self.eta / c1 * m / ((vhat / c2).sqrt() + self.eps), {"m": m, "v": v, "vhat": vhat}

        init = {"m": torch.zeros_like, "v": torch.zeros_like, "vhat": lambda x: torch.full_like(x, self.vhat_init)}
        return per_tensor(state, self.namespace, init, step)
