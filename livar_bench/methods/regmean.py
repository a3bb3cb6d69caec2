"""RegMean (Jin et al., ICLR 2023, arXiv 2212.09849): merge linear layers by their clients' input statistics.

Each client sends, besides its tensors, the Gram matrix G_k = X_k^T X_k of the inputs of every
LoRA-adapted layer and of the head over its training data (``Signal.INPUT_GRAM``, collector
``client/collectors/input_gram.py``). Per LoRA module, in product space, the merged update is RegMean's
closed form on the clients' dense updates Delta_k = s_k B_k A_k:

    Delta^T = (sum_k G~_k)^{-1} sum_k G~_k Delta_k^T,    G~_k = alpha G_k + (1 - alpha) diag(G_k)

(``ops.regmean.regmean``), truncated back to rank r by SVD. The base weight every client shares (W0 and any
correction) passes through unchanged, so merging the updates is merging the full weights wherever the sum
of the Gram matrices is invertible; where it is not (a singular sum at alpha = 1), the minimum-norm
solution leaves the shared base alone in directions no client's inputs reach. The head weight is merged
the same way with the Gram matrix of the pre-logit features; the head bias is the sample-weighted mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, ClassVar

import torch
from pydantic import Field

from livar_bench.client.signals import HEAD_MODULE
from livar_bench.methods.base import Aggregator
from livar_bench.methods.describe import describe
from livar_bench.methods.product_space import assemble, client_products, fedavg_rest, modules
from livar_bench.ops.regmean import regmean
from livar_bench.types import ClientUpdate, Params, RoundContext, Signal

REGMEAN_ALPHA = 0.6  # FusionBench's reduce_non_diagonal_ratio for CLIP ViTs


def grams(updates: Sequence[ClientUpdate], module: str) -> torch.Tensor:
    """[K, in, in] float64: the clients' input Gram matrices of ``module`` (a clear error if one is missing)."""
    if any(Signal.INPUT_GRAM.value not in u.signals for u in updates):
        raise ValueError("RegMean needs every client's input Gram matrices (Signal.INPUT_GRAM)")
    return torch.stack([u.signals[Signal.INPUT_GRAM.value][module].double() for u in updates])


@describe("regmean", paper="https://arxiv.org/abs/2212.09849", label="RegMean", order=90,
          summary="Closed-form regression mean of each layer from the clients' input Gram matrices (extra upload).")
class RegMean(Aggregator):
    """Closed-form regression mean of every adapted layer and the head weight, from input Gram matrices."""

    alpha: Annotated[float, Field(ge=0, le=1, description="share of the off-diagonal Gram entries kept (1: plain "
                                                          "least squares; below 1 regularises a singular Gram)")] = REGMEAN_ALPHA
    requires: ClassVar[frozenset[Signal]] = frozenset({Signal.INPUT_GRAM})

    def accepts_mixed_ranks(self) -> bool:
        return True

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        dense = {m: regmean(client_products(updates, m, ctx), grams(updates, m), self.alpha)
                 for m in modules(global_params)}
        rest = fedavg_rest(global_params, updates)
        w_key = ctx.head_keys[0]
        if w_key in global_params:
            heads = torch.stack([u.params[w_key].double() for u in updates])
            rest[w_key] = regmean(heads, grams(updates, HEAD_MODULE), self.alpha)
        return assemble(global_params, dense, rest, ctx)
