"""FLoRA (Wang et al., NeurIPS 2024, arXiv 2409.05976): stacking aggregation of LoRA adapters.

The server stacks the clients' weighted factors, [w_1 s_1 B_1 | ... | w_K s_K B_K] [A_1; ...; A_K],
whose product is exactly sum_k w_k s_k B_k A_k, folds that product into the base weights
(``ServerState.base_deltas``), and clients start every round from freshly initialised adapters
(A drawn as at initialisation, U(-1/sqrt(in), 1/sqrt(in)), from ``ctx.generator``; B = 0), so the
evaluated global model is W0 + the sum of every round's exact average. The head is averaged (FedAvg).
Stacking works for clients of different ranks r_k (``--client-ranks``), since the stacked rank is
sum_k r_k.

``a_init``: ``"shared"`` (default) gives every client of a round the same fresh A (so the stacked update stays
near rank r); ``"per_client"`` gives each client its own independent fresh A every round, as the authors'
code does (each client wraps the merged model in a new PEFT adapter), so the stack can reach rank K r. The
draws come from a per-round seed the server keeps (buffer ``<namespace>.a_seed.round``, drawn from
``ctx.generator``) and the client id, so both engines and a resumed run draw the same; round 1 starts from
the shared initialisation (the run's seeded initial model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field

from livar_bench.methods.base import Aggregator
from livar_bench.methods.buffers import Buffers
from livar_bench.methods.client_side import ClientSide
from livar_bench.methods.describe import describe
from livar_bench.methods.fedex_lora import exact_residuals
from livar_bench.ops.lora import factor_keys, init_lora_a, is_lora_key, lora_modules
from livar_bench.ops.weighted import sample_weights, weighted_average_params
from livar_bench.seeding import generator
from livar_bench.types import ClientUpdate, Params, RoundContext, ServerState


@dataclass(frozen=True)
class FreshAPerClient(ClientSide):
    """``ClientSide`` of ``flora[a_init=per_client]``: each client starts a round from its own fresh A (drawn like
    the initialisation from the round's seed and its id); B = 0 and the head come from the server."""

    def start(self, state: ServerState, client_id: int, namespace: str) -> Params:
        seed = Buffers(namespace, state.buffers).get("a_seed", "round")
        if seed is None:  # round 1: the run's seeded initial model, shared
            return state.params
        g = generator(int(seed), client_id)
        params = dict(state.params)
        for module in lora_modules(state.params):
            a_key = factor_keys(module)[0]
            a = state.params[a_key]
            params[a_key] = init_lora_a(a.shape, g).to(device=a.device, dtype=a.dtype)
        return params


@describe("flora", paper="https://arxiv.org/abs/2409.05976", label="FLoRA", order=72,
          summary="Stacking: exact weighted product folded into the base weights; fresh adapters each round.")
class FLoRA(Aggregator):
    """Stack, fold the exact weighted product into the base weights, restart adapters; FedAvg head."""

    moves_base_weights: ClassVar[bool] = True

    a_init: Annotated[Literal["shared", "per_client"], Field(
        description="each round's fresh A: one for every client (shared) or an independent one per client "
                    "(per_client, the authors' code; the stack can then reach rank K r)")] = "shared"

    def secure_aggregation(self) -> tuple[str, str]:
        return "individual", "it stacks each client's factors"

    def client_side(self) -> ClientSide:
        return FreshAPerClient() if self.a_init == "per_client" else ClientSide()

    def accepts_mixed_ranks(self) -> bool:
        return True

    def server_step(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext) -> ServerState:
        weights = sample_weights([u.num_samples for u in updates])
        others = [k for k in state.params if not is_lora_key(k)]
        params = weighted_average_params([u.params for u in updates], weights, keys=others)
        for module in lora_modules(state.params):  # fresh adapters: A as at initialisation, B = 0
            a_key, b_key = factor_keys(module)
            a = state.params[a_key]
            params[a_key] = init_lora_a(a.shape, ctx.generator).to(device=a.device, dtype=a.dtype)
            params[b_key] = torch.zeros_like(state.params[b_key])
        # With B = 0 the residual against the new factors is the whole weighted product: folded in.
        deltas = exact_residuals(state, params, updates, weights, ctx)
        new = state.evolve(params={k: params[k] for k in state.params}, base_deltas=deltas)
        if self.a_init != "per_client":
            return new
        buffers = Buffers(self.namespace, new.buffers)  # next round's clients draw their A from this seed
        buffers.set("a_seed", "round", torch.randint(0, 2**62, (), generator=ctx.generator, device=ctx.generator.device,
                                                     dtype=torch.int64).cpu())
        return new.evolve(buffers=buffers.mapping)
