"""FedSA-LoRA (Guo et al., ICLR 2025, arXiv 2410.01463): share A, keep B personal.

The server averages A and each client keeps its own B across rounds: its ``client_side()`` declares B
personal, so the server keeps B_k for it in its per-client state in host memory
(``ServerState.client_state``, ``<namespace>.B.<client>.<key>``, standing in for the client's own storage;
checkpointed, never on the accelerator; ``methods/client_side.py``) and client k starts each round from the
global A with its own B. The global B sent for *global* evaluation is the FedAvg of the B_k; the method's
intended metric is personalised accuracy (``--eval-local``: each client's personal B with the global A).

``head``: ``"shared"`` (default) averages the classification head (FedAvg) like A; ``"local"`` keeps it
personal with B, as the authors' GLUE configuration does (``personalization.local_param: ['lora_B',
'classifier']``); the global head is then the FedAvg of the clients' heads, for global evaluation only.

``first_start``: what a client sampled for the first time after round 1 starts from. ``"global"``
(default): the global B (and head), i.e. the FedAvg of the other clients' personal tensors. ``"initial"``:
its own initial ones, as the paper's rule implies (B never leaves its client, so it starts at its
initialisation): the initial personal tensors are kept in the buffers ``<namespace>.initial.<key>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from livar_bench.methods.base import Aggregator
from livar_bench.methods.buffers import Buffers, ClientBuffers
from livar_bench.methods.client_side import ClientSide, kind_of
from livar_bench.methods.describe import describe
from livar_bench.ops.weighted import sample_weights, weighted_average_params
from livar_bench.types import ClientUpdate, Params, RoundContext, ServerState


@dataclass(frozen=True)
class InitialFirstStart(ClientSide):
    """``ClientSide`` whose clients without personal tensors yet start from the initial ones (kept in the
    buffers ``<namespace>.initial.<key>``), not from the global ones."""

    def start(self, state: ServerState, client_id: int, namespace: str) -> Params:
        params = super().start(state, client_id, namespace)
        held = ClientBuffers(namespace, state.client_state)
        initial = Buffers(namespace, state.buffers)
        fresh = {}
        for k, v in state.params.items():
            kind = kind_of(k)
            if kind in self.personal and not held.of(kind, client_id, [k]):
                t = initial.get("initial", k)
                if t is not None and params[k] is v:  # never seen: the global tensor would be its start
                    fresh[k] = t.to(v.device)
        return {**params, **fresh} if fresh else params


@describe("fedsa_lora", paper="https://arxiv.org/abs/2410.01463", label="FedSA-LoRA", order=76,
          summary="A (and by default the head) shared (FedAvg); each client keeps its own B (personalised).")
class FedSALora(Aggregator):
    """FedAvg of A (and the head, unless it is local); every client keeps its own B."""

    head: Annotated[Literal["shared", "local"], Field(
        description="the classification head: averaged like A (shared) or kept by each client with its B "
                    "(local, the authors' GLUE configuration)")] = "shared"
    first_start: Annotated[Literal["global", "initial"], Field(
        description="what a client sampled for the first time after round 1 starts its personal tensors from: "
                    "the global ones, the FedAvg of the others' (global), or the initial ones (initial, the "
                    "paper's rule)")] = "global"

    def secure_aggregation(self) -> tuple[str, str]:
        return "individual", "it keeps each client's own B"

    def client_side(self) -> ClientSide:
        personal = frozenset({"B", "head"} if self.head == "local" else {"B"})
        return InitialFirstStart(personal=personal) if self.first_start == "initial" else ClientSide(personal=personal)

    def server_step(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext) -> ServerState:
        new = state.evolve(params=self(state.params, updates, ctx))
        if self.first_start != "initial":
            return new
        buffers = Buffers(self.namespace, new.buffers)
        personal = self.client_side().personal
        for k, v in state.params.items():  # the first round's start is the initial model: keep its tensors
            if kind_of(k) in personal and buffers.get("initial", k) is None:
                buffers.set("initial", k, v.detach().clone())
        return new.evolve(buffers=buffers.mapping)

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        return weighted_average_params([u.params for u in updates], sample_weights([u.num_samples for u in updates]),
                                       keys=global_params)
