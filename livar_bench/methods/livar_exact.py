"""LIVAR-Exact: LIVAR's signal weights applied to the LoRA *products*, with FedEx-LoRA's residual.

This project's own variant (no paper has tried it). LIVAR weights client k on module m by w_km from
its training signals (``livar.py``) and averages the factors A and B separately with those weights; the
global product (sum_k w_km B_k)(sum_k w_km A_k) is then not the weighted average of the client updates.
LIVAR-Exact keeps LIVAR's head and factor means and adds, per module, the residual

    sum_k w_km s_k B_k A_k - s B_m A_m

to the frozen base weights (``ServerState.base_deltas``, as FedEx-LoRA does with sample weights), so
the global model is exactly the LIVAR-weighted average of the client models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from livar_bench.methods.livar import Livar, lora_weights
from livar_bench.ops.lora import factor_keys, lora_delta, lora_modules, weighted_product
from livar_bench.types import ClientUpdate, RoundContext, ServerState, client_scale


@dataclass(frozen=True)
class LivarExact(Livar):
    """LIVAR (head and signal-weighted factors) plus the exact-aggregation residual per module."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.lora:
            raise ValueError("livar_exact needs lora=true (without LIVAR's LoRA weights it is fedex_lora)")

    def server_step(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext) -> ServerState:
        params = self(state.params, updates, ctx)
        modules = lora_modules(state.params)
        weights = lora_weights(updates, modules, self.weighting_rule)  # [K, M], the weights LIVAR used
        scales = [client_scale(u, ctx) for u in updates]
        deltas = dict(state.base_deltas)
        for m, module in enumerate(modules):
            a_key, b_key = factor_keys(module)
            exact = weighted_product([u.params[b_key] for u in updates], [u.params[a_key] for u in updates],
                                     weights[:, m].tolist(), scales)
            residual = exact - lora_delta(params[b_key], params[a_key], ctx.lora_scale)
            deltas[module] = deltas[module] + residual if module in deltas else residual
        return state.evolve(params=params, base_deltas=deltas)
