"""TSV-M (Gargiulo et al., CVPR 2025, arXiv 2412.00081): Task Singular Vectors merging, in product space.

Per LoRA module the clients' task matrices tau_k = s_k B_k A_k - s B A [out, in] are merged by
``ops.svd_merge.tsv_merge`` (each keeps its top int(n / K) singular triplets, the concatenated singular
vectors are orthogonalised, the singular values kept) and the global update becomes s B A + lam * TSV(tau),
truncated back to rank r by SVD. lam = 1 is the paper's (and FusionBench's) alpha. TSV-M adds tasks whose
subspaces are orthogonal and returns one task for identical ones, so with lam = 1 identical clients are a
fixed point of the product. The head is FedAvg.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import Field

from livar_bench.methods.base import Aggregator
from livar_bench.methods.describe import describe
from livar_bench.methods.product_space import assemble, fedavg_rest, modules, task_matrices
from livar_bench.ops.svd_merge import tsv_merge
from livar_bench.types import ClientUpdate, Params, RoundContext


@describe("tsv_m", paper="https://arxiv.org/abs/2412.00081", label="TSV-M", order=46,
          summary="Task Singular Vectors: each client's top singular vectors, jointly orthogonalised (product space).")
class TSVMerge(Aggregator):
    """s B A + lam * TSV-M of the clients' task matrices, per module."""

    lam: Annotated[float, Field(description="scale of the merged task matrix added to the global update (the "
                                            "paper's alpha)")] = 1.0

    def accepts_mixed_ranks(self) -> bool:
        return True

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        dense = {}
        for module in modules(global_params):
            start, taus = task_matrices(global_params, updates, module, ctx)
            dense[module] = start + self.lam * tsv_merge(taus)
        return assemble(global_params, dense, fedavg_rest(global_params, updates), ctx)
