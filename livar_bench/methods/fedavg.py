"""FedAvg (McMahan et al., 2017, arXiv 1602.05629).

Every trainable tensor is replaced by the sample-count weighted mean of the clients' tensors.

``space="factors"`` (default, as the LIVAR reference code does): LoRA factors A and B are averaged
*separately*, so the merged update is (sum_k w_k B_k)(sum_k w_k A_k), not sum_k w_k B_k A_k.
``space="product"``: each module's update is the exact mean sum_k w_k s_k B_k A_k, truncated back to the
global rank r by SVD (the best rank-r approximation; what PEFT calls ``svd`` merging). It also accepts
clients of different ranks (``--client-ranks``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field

from livar_bench.methods.base import Aggregator
from livar_bench.methods.describe import describe
from livar_bench.ops.lora import factor_keys, lora_modules, to_factors, weighted_product
from livar_bench.ops.weighted import sample_weights, weighted_average_params
from livar_bench.types import ClientUpdate, Params, RoundContext, client_scale

# Shared by the merges that can work in either space (FedAvg, TIES, task arithmetic).
SPACE_HELP = ("merge the LoRA factors A and B separately (factors), or each module's exact product B A, "
              "truncated back to rank r by SVD (product, which accepts mixed client ranks)")


@describe("fedavg", paper="https://arxiv.org/abs/1602.05629", label="FedAvg", order=0,
          summary="Sample-weighted mean of LoRA factors (A, B separately) and head.")
class FedAvg(Aggregator):
    """Sample-weighted mean of every trainable tensor (LoRA factors separately, head rows)."""

    def secure_aggregation(self) -> tuple[str, str]:
        if self.space == "product":
            return "individual", "the mean of the products B_k A_k of each client's factors"
        return "sum", "the sample-weighted mean of the client tensors"

    space: Annotated[Literal["factors", "product"], Field(description=SPACE_HELP)] = "factors"

    def accepts_mixed_ranks(self) -> bool:
        return self.space == "product"

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        weights = sample_weights([u.num_samples for u in updates])
        out = weighted_average_params([u.params for u in updates], weights, keys=global_params)
        if self.space == "product":
            scales = [client_scale(u, ctx) for u in updates]
            dense = {m: weighted_product([u.params[factor_keys(m)[1]] for u in updates],
                                         [u.params[factor_keys(m)[0]] for u in updates], weights.tolist(), scales)
                     for m in lora_modules(global_params)}
            out.update(to_factors(dense, global_params, ctx.lora_scale))
        return out
