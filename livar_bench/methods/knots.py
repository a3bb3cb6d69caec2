"""KnOTS (Stoica et al., ICLR 2025, arXiv 2410.19735): merge LoRA updates in a shared SVD basis.

Per LoRA module the clients' task matrices tau_k = s_k B_k A_k - s B A are aligned by the SVD of their
column-wise concatenation, [tau_1 | ... | tau_K] = U S [V_1^T | ... | V_K^T] (``ops.svd_merge.knots_align``:
one basis U, per-client coefficients S V_k^T, components with singular value <= 1e-5 dropped, the authors'
``s_on_V``). The coefficients of all modules are joined into one vector per client and merged by TIES
(``merge=ties``: trim to ``density`` with one threshold per client, elect signs, disjoint mean) or averaged
(``merge=mean``); each module's merged update U @ merged coefficients is added with weight lam and the
result truncated back to rank r by SVD. Defaults are the authors' ViT configuration (``vitB_r16_knots_ties``:
top 20 %, mean, scaling 0.6). The head is FedAvg.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field

from livar_bench.methods.base import Aggregator
from livar_bench.methods.describe import describe
from livar_bench.methods.product_space import assemble, fedavg_rest, modules, task_matrices
from livar_bench.ops.svd_merge import knots_align
from livar_bench.ops.ties import merge_task_vectors
from livar_bench.types import ClientUpdate, Params, RoundContext

KNOTS_DENSITY = 0.2  # the authors' topK 20
KNOTS_LAMBDA = 0.6  # the authors' scaling coefficient for ViT-B


@describe("knots", paper="https://arxiv.org/abs/2410.19735", label="KnOTS", order=48,
          summary="Align client updates in one SVD basis of their concatenation, then TIES on the coefficients.")
class KnOTS(Aggregator):
    """Shared-basis alignment of the clients' task matrices, then TIES (or a mean) on the coefficients."""

    merge: Annotated[Literal["ties", "mean"], Field(
        description="how the clients' aligned coefficients are combined: TIES (trim, elect sign, disjoint mean) "
                    "or their mean")] = "ties"
    density: Annotated[float, Field(ge=0, le=1, description="fraction of each client's coefficients kept by "
                                                            "TIES' trim (the authors' topK 20)")] = KNOTS_DENSITY
    lam: Annotated[float, Field(description="scale of the merged update added to the global update (the "
                                            "authors' scaling coefficient)")] = KNOTS_LAMBDA

    def accepts_mixed_ranks(self) -> bool:
        return True

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        names = modules(global_params)
        starts, bases, coeffs = {}, {}, {}
        for module in names:
            starts[module], taus = task_matrices(global_params, updates, module, ctx)
            bases[module], coeffs[module] = knots_align(taus)  # [out, k], [K, k, in]
        joined = torch.cat([coeffs[m].reshape(len(updates), -1) for m in names], dim=1)  # [K, N]
        if self.merge == "ties":
            merged = merge_task_vectors(joined, density=self.density, sign_election=True, trim="global")
        else:
            merged = joined.mean(0)
        dense, offset = {}, 0
        for m in names:
            size = coeffs[m][0].numel()
            block = merged[offset : offset + size].reshape(coeffs[m].shape[1:])
            dense[m] = starts[m] + self.lam * (bases[m] @ block)
            offset += size
        return assemble(global_params, dense, fedavg_rest(global_params, updates), ctx)
