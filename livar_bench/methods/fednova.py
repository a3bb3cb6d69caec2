"""FedNova: normalised averaging (Wang, Liu, Liang, Joshi, Poor, NeurIPS 2020, arXiv 2007.07481).

Clients that take more local steps move further; plain FedAvg then drifts toward the objective of the
clients that worked most (the paper's objective inconsistency). FedNova divides each client's update by
its own amount of local work before averaging and rescales the mean by the average work. With x the
global tensors, x_i client i's, p_i = n_i / sum_j n_j over the round's replies and tau_i the local steps
client i actually took (``ClientUpdate.num_steps``):

    a_i     = tau_i                                            (rho = 0: the norm of plain SGD's a_i)
            = [tau_i - rho (1 - rho^tau_i) / (1 - rho)] / (1 - rho)      (local SGD with momentum rho)
    tau_eff = sum_i p_i a_i
    D       = tau_eff * sum_i p_i (x - x_i) / a_i
    m       = gmf * m + D                                      (server momentum; gmf = 0: m = D)
    x      <- x - m

With equal a_i, D = sum_i p_i (x - x_i), so x - D is FedAvg. m is server state (a buffer per tensor,
``fednova.m.<param>``) only when ``gmf > 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from livar_bench.errors import BenchError
from livar_bench.methods.base import Aggregator
from livar_bench.methods.buffers import per_tensor
from livar_bench.methods.describe import describe
from livar_bench.ops.weighted import sample_weights
from livar_bench.types import ClientUpdate, RoundContext, ServerState


def normaliser(steps: int, rho: float) -> float:
    """||a_i||_1 of a client that took ``steps`` local steps with momentum ``rho`` (the paper's a_i)."""
    if rho == 0:
        return float(steps)
    return (steps - rho * (1 - rho**steps) / (1 - rho)) / (1 - rho)


@describe("fednova", paper="https://arxiv.org/abs/2007.07481", label="FedNova", order=20,
          summary="Normalised averaging: each update divided by its local steps, the mean rescaled by the mean work.")
class FedNova(Aggregator):
    """x - tau_eff * sum_i p_i (x - x_i) / a_i (a_i: client i's local steps, momentum-corrected)."""

    rho: Annotated[float, Field(ge=0, lt=1, description="local momentum the normaliser a_i assumes (0: plain "
                                                        "SGD, a_i = local steps)")] = 0.0
    gmf: Annotated[float, Field(ge=0, lt=1, description="server momentum factor on the normalised update "
                                                        "(the authors' gmf; 0 = none)")] = 0.0

    def server_step(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext) -> ServerState:
        missing = [u.client_id for u in updates if u.num_steps is None]
        if missing:
            raise BenchError(f"fednova needs the local steps of every update; clients {missing} report none")
        p = sample_weights([u.num_samples for u in updates]).tolist()
        a = [normaliser(int(u.num_steps), self.rho) for u in updates]
        tau_eff = sum(pi * ai for pi, ai in zip(p, a, strict=True))

        def direction(key: str, x: Tensor) -> Tensor:
            total = torch.zeros_like(x)
            for pi, ai, u in zip(p, a, updates, strict=True):
                total += (pi / ai) * (x - u.params[key].float())
            return tau_eff * total

        if self.gmf == 0:
            return state.evolve(params={k: (v.float() - direction(k, v.float())).to(v.dtype)
                                        for k, v in state.params.items()})

        def step(key: str, x: Tensor, buffers: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
            m = self.gmf * buffers["m"] + direction(key, x)
            return x - m, {"m": m}

        return per_tensor(state, self.namespace, {"m": torch.zeros_like}, step)
