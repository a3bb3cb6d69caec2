"""FlexLoRA (Bai et al., NeurIPS 2024, arXiv 2402.11505): full-size average, SVD back to each client's rank.

Per LoRA module the server forms the sample-weighted mean of the clients' full updates,
W_g = sum_k p_k s_k B_k A_k (p_k = n_k / n), takes its SVD U S V^T and keeps the top r components as
B = U_{:r} S_{:r} / s, A = V_{:r}^T (the singular values on B, ``split="b"``; ``split="sqrt"`` splits them
evenly). The factors come sorted by singular value, so a client of rank r_k < r (``--client-ranks``),
which reads the first r_k components, receives the best rank-r_k approximation of W_g: FlexLoRA's
per-client truncation. The head is FedAvg.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field

from livar_bench.methods.base import Aggregator
from livar_bench.methods.describe import describe
from livar_bench.methods.product_space import client_products, fedavg_rest, modules
from livar_bench.ops.lora import factor_keys
from livar_bench.ops.lora_het import svd_factors
from livar_bench.ops.weighted import sample_weights
from livar_bench.types import ClientUpdate, Params, RoundContext


@describe("flexlora", paper="https://arxiv.org/abs/2402.11505", label="FlexLoRA", order=78,
          summary="SVD of the weighted mean of the full products, truncated to each client's rank (--client-ranks).")
class FlexLoRA(Aggregator):
    """SVD of the sample-weighted mean of the clients' products, truncated to rank r (S on B)."""

    split: Annotated[Literal["b", "sqrt"], Field(
        description="put the singular values on B (b, the paper: B = U S, A = V^T) or split them evenly "
                    "(sqrt: S^1/2 on each factor)")] = "b"

    def accepts_mixed_ranks(self) -> bool:
        return True

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        p = sample_weights([u.num_samples for u in updates])
        out = fedavg_rest(global_params, updates)
        for module in modules(global_params):
            a_key, b_key = factor_keys(module)
            full = torch.einsum("k,koi->oi", p.to(torch.float64), client_products(updates, module, ctx))
            out[b_key], out[a_key] = svd_factors(full, global_params[a_key].shape[0], ctx.lora_scale, self.split)
        return {k: out[k].to(device=v.device, dtype=v.dtype) for k, v in global_params.items()}
