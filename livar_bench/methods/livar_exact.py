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
from typing import ClassVar

from livar_bench.methods.describe import describe
from livar_bench.methods.fedex_lora import exact_residuals
from livar_bench.methods.livar import Livar, lora_weights
from livar_bench.ops.lora import lora_modules
from livar_bench.types import ClientUpdate, RoundContext, ServerState


@describe("livar_exact", paper="https://arxiv.org/abs/2507.06813", label="LIVAR-Exact (ours)", order=110,
          summary="This project's variant: LIVAR's signal weights on the LoRA products, with FedEx-LoRA's residual "
          "in the base weights.")
class LivarExact(Livar):
    """LIVAR (head and signal-weighted factors) plus the exact-aggregation residual per module."""

    moves_base_weights: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.lora:
            raise ValueError("livar_exact needs lora=true (without LIVAR's LoRA weights it is fedex_lora)")
        if self.eval_delta == "reference":
            # The evaluated model would be W0 + residual + (sum_k n_k/N s B_k A_k - s B A): the base weights
            # already hold the exact residual, so the reference's correction would count it a second time.
            raise ValueError("livar_exact cannot take eval_delta=reference: its base weights already hold the "
                             "exact residual, and the reference's evaluation correction would add it again; use "
                             "livar[eval_delta=reference] for the reference code's evaluation")

    def server_step(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext) -> ServerState:
        params = self(state.params, updates, ctx)
        weights = lora_weights(updates, lora_modules(state.params), self.weighting_rule)  # [K, M], LIVAR's
        return state.evolve(params=params, base_deltas=exact_residuals(state, params, updates, weights, ctx))
