"""RoLoRA (Chen et al., 2025, arXiv 2502.01755): federated LoRA by alternating optimisation of its factors.

Rounds alternate which LoRA factor clients train; the other stays frozen at its global value:

    odd rounds  (1, 3, ...):  A frozen, clients train B (and the head);  B <- sum_k w_k B_k
    even rounds (2, 4, ...):  B frozen, clients train A (and the head);  A <- sum_k w_k A_k

B first: B starts at zero, and with B = 0 the gradient of A is zero, so a first round on A would not move
the model. With one factor shared and frozen, averaging the trained one is the exact mean of the client
products (sum_k w_k B_k A = sum_k w_k (B_k A), and likewise for A), so no SVD is needed. The server keeps
the frozen factor from its state, bit for bit, and a client's upload counts only what it trained (the
cost columns: about half the LoRA bytes). Which factor a round trains is declared in ``client_side()``
(``ClientSide.alternate``), so both engines, packing, the ``dp`` stage and ``bench`` follow it; the head
trains every round and is averaged (FedAvg), as FFA-LoRA's here. w_k = n_k / sum_j n_j.
"""

from __future__ import annotations

from collections.abc import Sequence

from livar_bench.methods.base import Aggregator
from livar_bench.methods.client_side import ClientSide
from livar_bench.methods.describe import describe
from livar_bench.ops.weighted import sample_weights, weighted_average_params
from livar_bench.types import ClientUpdate, Params, RoundContext

# Round r freezes ALTERNATE[(r - 1) % 2]: A in odd rounds (B trains), B in even rounds (A trains).
ALTERNATE = (frozenset({"A"}), frozenset({"B"}))


@describe("rolora", paper="https://arxiv.org/abs/2502.01755", label="RoLoRA", order=75,
          summary="Alternating factors: odd rounds train B (A frozen), even rounds A (B frozen); exact average "
                  "of the trained factor, half the upload.")
class RoLoRA(Aggregator):
    """FedAvg of the factor trained this round (and the head); the frozen factor kept from the state."""

    def secure_aggregation(self) -> tuple[str, str]:
        return "sum", "the sample-weighted mean of the trained factor and the head"

    def client_side(self) -> ClientSide:
        return ClientSide(alternate=ALTERNATE, uploads_frozen=False)

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        frozen = self.client_side().frozen_keys(global_params, ctx.round)
        trained = [k for k in global_params if k not in frozen]
        out = weighted_average_params([u.params for u in updates], sample_weights([u.num_samples for u in updates]),
                                      keys=trained)
        return {k: global_params[k] if k in frozen else out[k] for k in global_params}
