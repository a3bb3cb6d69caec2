"""FedSA-LoRA (Guo et al., ICLR 2025, arXiv 2410.01463): share A, keep B personal.

The server averages A (and the head; the paper adapts language models without a task head, here the
head is shared, FedAvg) and each client keeps its own B across rounds: B_k lives in the server's
per-client state in host memory (``ServerState.client_state``, ``<namespace>.B.<client>.<key>``, standing
in for the client's own storage; checkpointed, never on the accelerator) and client k starts each
round from the global A and head with its own B (its first round: the global B). The global B sent for
*global* evaluation is the FedAvg of the B_k; the method's intended metric is personalised accuracy
(``--eval-local``: each client's personal B with the global A and head).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from livar_bench.methods.base import Aggregator
from livar_bench.methods.describe import describe
from livar_bench.ops.weighted import sample_weights, weighted_average_params
from livar_bench.types import ClientUpdate, Params, RoundContext, ServerState


@describe("fedsa_lora", paper="https://arxiv.org/abs/2410.01463", label="FedSA-LoRA", order=76,
          summary="A and head shared (FedAvg); each client keeps its own B (personalised).")
class FedSALora(Aggregator):
    """FedAvg of A and head; every client keeps its own B."""

    def secure_aggregation(self) -> tuple[str, str]:
        return "individual", "it keeps each client's own B"

    personalised: ClassVar[bool] = True

    def client_start(self, state: ServerState, client_id: int) -> Params:
        own = self.client_buffers(state).of("B", client_id, state.params)
        if not own:  # a checkpoint written before per-client state moved to the host kept B_k in the buffers
            own = self.buffers(state).of(f"B.{client_id}", state.params)
        return {**state.params, **{k: v.to(state.params[k].device) for k, v in own.items()}} if own else state.params

    def personal_params(self, state: ServerState, update: ClientUpdate) -> Params:
        return {k: update.params[k] if k.endswith(".lora_B") else v for k, v in state.params.items()}

    def server_step(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext) -> ServerState:
        params = weighted_average_params([u.params for u in updates], sample_weights([u.num_samples for u in updates]),
                                         keys=state.params)
        own = self.client_buffers(state)
        for u in updates:
            for k, v in u.params.items():
                if k.endswith(".lora_B"):
                    own.set("B", u.client_id, k, v)  # a host copy
        return state.evolve(params=params, client_state=own.mapping)
