"""FFA-LoRA (Sun et al., ICLR 2024, arXiv 2403.12313): federated LoRA with A frozen.

Every client keeps A at its shared, seeded initialisation (``client_side()`` declares A frozen: no
gradient, no update, no weight decay), so only B and the head train; the server averages them (FedAvg). With A fixed and shared,
the average of the products is the product of the averages: sum_k w_k B_k A = (sum_k w_k B_k) A, so
factor averaging is exact. The server keeps A from its state, bit for bit.

``weights``: ``"samples"`` (default) w_k = n_k / N, as FedAvg and the rest of the harness; ``"uniform"``
w_k = 1/K, as the public baseline implementations average B and the classifier (e.g. FedEx-LoRA's
``aggregate_models_ffa``, plain means).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field

from livar_bench.methods.base import Aggregator
from livar_bench.methods.client_side import ClientSide
from livar_bench.methods.describe import describe
from livar_bench.ops.weighted import client_weights, weighted_average_params
from livar_bench.types import ClientUpdate, Params, RoundContext


@describe("ffa_lora", paper="https://arxiv.org/abs/2403.12313", label="FFA-LoRA", order=74,
          summary="A frozen at its seeded initialisation; FedAvg of B and head.")
class FFALora(Aggregator):
    """A frozen at initialisation; FedAvg of B and head."""

    weights: Annotated[Literal["samples", "uniform"], Field(
        description="client weights of the mean of B and the head: n_k/N (samples, FedAvg's) or 1/K (uniform, "
                    "the public baseline implementations)")] = "samples"

    def secure_aggregation(self) -> tuple[str, str]:
        return "sum", f"the {'sample-weighted' if self.weights == 'samples' else 'plain'} mean of B and the head " \
                      "(A is frozen)"

    def secure_weight(self, update: ClientUpdate) -> float:
        return float(update.num_samples) if self.weights == "samples" else 1.0

    def client_side(self) -> ClientSide:
        return ClientSide(frozen=frozenset({"A"}))

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        frozen = self.client_side().frozen_keys(global_params)
        trained = [k for k in global_params if k not in frozen]
        out = weighted_average_params([u.params for u in updates],
                                      client_weights([u.num_samples for u in updates], self.weights), keys=trained)
        return {k: global_params[k] if k in frozen else out[k] for k in global_params}
