"""HetLoRA (Cho et al., EMNLP 2024, arXiv 2401.06432): heterogeneous ranks, norm-weighted aggregation.

Clients of rank r_k train the first r_k components of the rank-r global adapter (``--client-ranks``; the
others stay zero, so their factors arrive zero-padded to r). Per LoRA module the server weights client k
by the Frobenius norm of its update, p_k = ||s_k B_k A_k||_F / sum_j ||s_j B_j A_j||_F ("sparsity-weighted
aggregation": a client whose adapter carries more energy counts more), and averages the padded factors,
B = sum_k p_k (s_k / s) B_k, A = sum_k p_k A_k (the client's scale folded into B, so that its own update
is what is weighted). The next round each client takes the first r_k components of the result (HetLoRA's
truncation). If every norm is zero the sample counts weigh instead. The head is FedAvg.

Not implemented: the paper's optional client-side rank self-pruning (a regulariser on the trailing
components and a pruning rule on the client), which needs a client hook this harness does not offer per
client; baselines/hetlora/README.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from livar_bench.methods.base import Aggregator
from livar_bench.methods.describe import describe
from livar_bench.methods.product_space import client_products, fedavg_rest, modules
from livar_bench.ops.lora import factor_keys
from livar_bench.ops.lora_het import norm_weights
from livar_bench.ops.weighted import sample_weights, weighted_average
from livar_bench.types import ClientUpdate, Params, RoundContext, client_scale


def hetlora_weights(updates: Sequence[ClientUpdate], module: str, ctx: RoundContext) -> torch.Tensor:
    """[K] float64: each client's share ||s_k B_k A_k||_F / sum_j ||s_j B_j A_j||_F for ``module``."""
    norms = torch.linalg.matrix_norm(client_products(updates, module, ctx)).cpu()
    return norm_weights(norms, sample_weights([u.num_samples for u in updates]))


@describe("hetlora", paper="https://arxiv.org/abs/2401.06432", label="HetLoRA", order=80,
          summary="Zero-padded factors averaged with weights from the products' Frobenius norms (--client-ranks).")
class HetLoRA(Aggregator):
    """Zero-padded factors averaged with weights proportional to the norms of the clients' products."""

    def accepts_mixed_ranks(self) -> bool:
        return True

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        out = fedavg_rest(global_params, updates)
        ratios = [client_scale(u, ctx) / ctx.lora_scale for u in updates]
        for module in modules(global_params):
            a_key, b_key = factor_keys(module)
            p = hetlora_weights(updates, module, ctx)
            out[a_key] = weighted_average([u.params[a_key] for u in updates], p)
            out[b_key] = weighted_average([u.params[b_key] for u in updates], p * torch.tensor(ratios, dtype=p.dtype))
        return {k: out[k].to(device=v.device, dtype=v.dtype) for k, v in global_params.items()}
