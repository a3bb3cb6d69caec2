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
(``ServerState.buffers``, keys ``<namespace>.m.<param>`` and ``<namespace>.v.<param>``, float32), so
they are checkpointed and a resumed run continues exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from livar_bench.methods.base import Aggregator
from livar_bench.methods.buffers import per_tensor
from livar_bench.methods.describe import hyperparameters
from livar_bench.ops.weighted import sample_weights, weighted_average_params
from livar_bench.types import ClientUpdate, Params, RoundContext, ServerState


def pseudo_gradient(state: ServerState, updates: Sequence[ClientUpdate]) -> Params:
    """delta = sample-weighted FedAvg of the clients' tensors - the global tensors (float32)."""
    merged = weighted_average_params([u.params for u in updates], sample_weights([u.num_samples for u in updates]),
                                     keys=state.params)
    return {k: merged[k].float() - v.float() for k, v in state.params.items()}


@hyperparameters
class FedOpt(Aggregator):
    """Adaptive server step on the FedAvg pseudo-gradient; subclasses give the second-moment update."""

    server_moments: ClassVar[bool] = True

    def secure_aggregation(self) -> tuple[str, str]:
        return "sum", "a server optimiser step on the sample-weighted mean update"

    eta: Annotated[float, Field(gt=0, description="server learning rate")] = 1e-2
    beta1: Annotated[float, Field(ge=0, lt=1, description="decay of the first moment m")] = 0.9
    beta2: Annotated[float, Field(ge=0, lt=1, description="decay of the second moment v (unused by "
                                                           "FedAdagrad)")] = 0.99
    tau: Annotated[float, Field(gt=0, description="adaptivity, added to sqrt(v) (v starts at tau^2)")] = 1e-3

    def second_moment(self, v: Tensor, d2: Tensor) -> Tensor:
        raise NotImplementedError

    def server_step(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext) -> ServerState:
        delta = pseudo_gradient(state, updates)

        def step(key: str, x: Tensor, buffers: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
            m = self.beta1 * buffers["m"] + (1 - self.beta1) * delta[key]
            v = self.second_moment(buffers["v"], delta[key] * delta[key])
            return x + self.eta * m / (v.sqrt() + self.tau), {"m": m, "v": v}

        return per_tensor(state, self.namespace, {"m": torch.zeros_like, "v": lambda x: torch.full_like(x, self.tau**2)},
                          step)
