"""FedProx (Li et al., 2020, arXiv 1812.06127).

FedProx changes the client, not the server: each client minimises its loss plus
mu/2 * ||w - w_global||^2 over its trainable tensors (``client.objectives.Proximal``), and the server
takes the sample-weighted mean exactly as FedAvg does. With ``mu = 0`` it is FedAvg.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import Field

from livar_bench.client.objectives import Proximal
from livar_bench.methods.base import Aggregator
from livar_bench.methods.client_side import ClientSide
from livar_bench.methods.describe import describe
from livar_bench.methods.fedavg import FedAvg
from livar_bench.types import ClientUpdate, Params, RoundContext

# The LIVAR reference code has no FedProx; 0.01 is one of the values of the FedProx paper's grid
# (mu in {0.001, 0.01, 0.1, 1}) and a common default for fine-tuning, where a large mu stalls training.
DEFAULT_MU = 0.01


@describe("fedprox", paper="https://arxiv.org/abs/1812.06127", label="FedProx", order=10,
          summary="FedAvg server; clients add the proximal term mu/2 ||w - w_global||^2.")
class FedProx(Aggregator):
    """FedAvg on the server; cross-entropy + proximal term ``mu`` on the clients."""

    def secure_aggregation(self) -> tuple[str, str]:
        return "sum", "the sample-weighted mean of the client tensors"

    mu: Annotated[float, Field(ge=0, description="weight of the clients' proximal term mu/2 ||w - w_global||^2 "
                                                 "(0 is FedAvg)")] = DEFAULT_MU

    def client_side(self) -> ClientSide:
        return ClientSide(objective=Proximal(self.mu))

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        return FedAvg()(global_params, updates, ctx)
