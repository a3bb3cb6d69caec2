"""FedSA-LoRA (Guo et al., ICLR 2025, arXiv 2410.01463): share A, keep B personal.

The server averages A (and the head; the paper adapts language models without a task head, here the
head is shared, FedAvg) and each client keeps its own B across rounds: its ``client_side()`` declares B
personal, so the server keeps B_k for it in its per-client state in host memory
(``ServerState.client_state``, ``<namespace>.B.<client>.<key>``, standing in for the client's own storage;
checkpointed, never on the accelerator; ``methods/client_side.py``) and client k starts each round from the
global A and head with its own B (its first round: the global B). The global B sent for *global*
evaluation is the FedAvg of the B_k; the method's intended metric is personalised accuracy
(``--eval-local``: each client's personal B with the global A and head).
"""

from __future__ import annotations

from collections.abc import Sequence

from livar_bench.methods.base import Aggregator
from livar_bench.methods.client_side import ClientSide
from livar_bench.methods.describe import describe
from livar_bench.ops.weighted import sample_weights, weighted_average_params
from livar_bench.types import ClientUpdate, Params, RoundContext


@describe("fedsa_lora", paper="https://arxiv.org/abs/2410.01463", label="FedSA-LoRA", order=76,
          summary="A and head shared (FedAvg); each client keeps its own B (personalised).")
class FedSALora(Aggregator):
    """FedAvg of A and head; every client keeps its own B."""

    def secure_aggregation(self) -> tuple[str, str]:
        return "individual", "it keeps each client's own B"

    def client_side(self) -> ClientSide:
        return ClientSide(personal=frozenset({"B"}))

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        return weighted_average_params([u.params for u in updates], sample_weights([u.num_samples for u in updates]),
                                       keys=global_params)
