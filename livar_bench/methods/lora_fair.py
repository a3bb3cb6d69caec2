"""LoRA-FAIR (Bian et al., ICCV 2025, arXiv 2411.14961): averaged factors with a server-side correction of B.

The server averages A and B with sample weights p_k (A-bar, B-bar, as FedAvg does) and corrects B so that
the corrected product is close to the mean of the client products Delta W = sum_k p_k s_k B_k A_k:

    B' = argmin_B ||Delta W / s - B A-bar||_F^2 + lam ||B - B-bar||_F^2
       = (Delta W / s A-bar^T + lam B-bar)(A-bar A-bar^T + lam I)^{-1}      (``ops.lora_het.lora_fair_b``)

Clients start the next round from (A-bar, B') ("Avg-Initial": the refined global adapter, not a fresh one),
so nothing extra is sent. The head is FedAvg. lam = 0 fits B exactly on A-bar's row space; a large lam
gives FedAvg back. The paper writes the objective with a general similarity metric and a (non-squared)
norm penalty solved by an iterative optimiser; the least-squares form here is solved exactly
(baselines/lora_fair/README.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field

from livar_bench.methods.base import Aggregator
from livar_bench.methods.describe import describe
from livar_bench.methods.product_space import client_products, fedavg_rest, modules
from livar_bench.ops.lora import factor_keys
from livar_bench.ops.lora_het import lora_fair_b
from livar_bench.ops.weighted import sample_weights, weighted_average
from livar_bench.types import ClientUpdate, Params, RoundContext

DEFAULT_LAM = 0.01  # the paper's regularisation weight


@describe("lora_fair", paper="https://arxiv.org/abs/2411.14961", label="LoRA-FAIR", order=82,
          summary="FedAvg of A and B, then B corrected on the server so that B A-bar fits the mean client product.")
class LoraFair(Aggregator):
    """FedAvg of A and head; B corrected so that B' A-bar fits the mean client product."""

    lam: Annotated[float, Field(ge=0, description="weight of the ridge keeping the corrected B near the averaged "
                                                  "B (0: exact least-squares fit; large: FedAvg)")] = DEFAULT_LAM

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        p = sample_weights([u.num_samples for u in updates])
        out = fedavg_rest(global_params, updates)
        for module in modules(global_params):
            a_key, b_key = factor_keys(module)
            a_bar = weighted_average([u.params[a_key] for u in updates], p)
            b_bar = weighted_average([u.params[b_key] for u in updates], p)
            target = torch.einsum("k,koi->oi", p.to(torch.float64), client_products(updates, module, ctx))
            out[a_key] = a_bar
            out[b_key] = lora_fair_b(target / ctx.lora_scale, a_bar, b_bar, self.lam)
        return {k: out[k].to(device=v.device, dtype=v.dtype) for k, v in global_params.items()}
