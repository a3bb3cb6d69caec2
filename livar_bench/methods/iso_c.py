"""Iso-C (Marczak et al., ICML 2025, arXiv 2502.04959, "No Task Left Behind"): isotropic merging, in product space.

Per LoRA module the clients' task matrices tau_k = s_k B_k A_k - s B A are combined (``reduce``: their
mean, default, or their sum as in the paper), the spectrum of the result is flattened to its mean
(``ops.svd_merge.iso_c``: mean(sigma) U V^T over the spectrum's support) and the global update becomes
s B A + lam * Iso(tau), truncated back to rank r by SVD. The paper's form is ``reduce=sum`` with lam tuned
on validation data (FusionBench's default 1.0); the mean makes lam = 1 a step of the clients' average size
whatever the number of clients (Iso-C is homogeneous, so the two differ by the factor K only). The head
is FedAvg.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field

from livar_bench.methods.base import Aggregator
from livar_bench.methods.describe import describe
from livar_bench.methods.product_space import assemble, fedavg_rest, modules, task_matrices
from livar_bench.ops.svd_merge import iso_c
from livar_bench.types import ClientUpdate, Params, RoundContext


@describe("iso_c", paper="https://arxiv.org/abs/2502.04959", label="Iso-C", order=47,
          summary="Isotropic merging: the mean task matrix with its spectrum flattened to the mean (product space).")
class IsoC(Aggregator):
    """s B A + lam * mean(sigma) U V^T of the mean (or sum) of the clients' task matrices, per module."""

    lam: Annotated[float, Field(description="scale of the isotropic update added to the global update")] = 1.0
    reduce: Annotated[Literal["mean", "sum"], Field(
        description="combine the clients' task matrices by their mean (a step of the clients' average size) or "
                    "their sum (the paper)")] = "mean"

    def accepts_mixed_ranks(self) -> bool:
        return True

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        dense = {}
        for module in modules(global_params):
            start, taus = task_matrices(global_params, updates, module, ctx)
            combined = taus.mean(0) if self.reduce == "mean" else taus.sum(0)
            dense[module] = start + self.lam * iso_c(combined)
        return assemble(global_params, dense, fedavg_rest(global_params, updates), ctx)
