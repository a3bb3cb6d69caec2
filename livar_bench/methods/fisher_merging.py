"""Fisher merging (Matena and Raffel, NeurIPS 2022, arXiv 2111.09832): a Fisher-weighted parameter average.

Each client sends a diagonal Fisher estimate F_k of every trainable tensor (``Signal.FISHER``, collector
``client/collectors/fisher.py``) and the server averages entry by entry,

    theta = sum_k n_k F_k theta_k / sum_k n_k F_k       (``ops.regmean.fisher_merge``, F_k + ``floor``)

with the clients' sample counts n_k as the paper's per-model weights lambda_k (the Fisher is a per-example
mean, so n_k F_k is the client's total). **Space: factors**: the parameters are the LoRA factors A and B
and the head, each entry weighted by its own Fisher, as the paper treats every parameter of a model.
``normalise=True`` first divides each client's Fisher by its L2 norm over all tensors, FusionBench's
``normalize_fisher_weight`` (not in the paper).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, ClassVar

import torch
from pydantic import Field

from livar_bench.methods.base import Aggregator
from livar_bench.methods.describe import describe
from livar_bench.ops.regmean import FISHER_FLOOR, fisher_merge
from livar_bench.types import ClientUpdate, Params, RoundContext, Signal


@describe("fisher_merging", paper="https://arxiv.org/abs/2111.09832", label="Fisher merging", order=92,
          summary="Parameter average weighted entry by entry by the clients' diagonal Fisher (extra upload).")
class FisherMerging(Aggregator):
    """Entry-wise sum_k n_k F_k theta_k / sum_k n_k F_k over every trainable tensor."""

    floor: Annotated[float, Field(gt=0, description="added to every Fisher entry, so that an entry no client's "
                                                    "Fisher covers is the weighted mean (FusionBench's "
                                                    "minimal_fisher_weight)")] = FISHER_FLOOR
    normalise: Annotated[bool, Field(description="divide each client's Fisher by its L2 norm over all tensors "
                                                 "first (FusionBench's option, not the paper's)")] = False
    requires: ClassVar[frozenset[Signal]] = frozenset({Signal.FISHER})

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        if any(Signal.FISHER.value not in u.signals for u in updates):
            raise ValueError("Fisher merging needs every client's Fisher estimates (Signal.FISHER)")
        fishers = [u.signals[Signal.FISHER.value] for u in updates]
        scale = [1.0] * len(updates)
        if self.normalise:  # FusionBench: each client's Fisher divided by its norm over all tensors
            scale = [1.0 / (math.sqrt(sum(float(f[k].double().square().sum()) for k in global_params)) + self.floor)
                     for f in fishers]
        counts = torch.tensor([u.num_samples for u in updates], dtype=torch.float64)
        out = {}
        for key, value in global_params.items():
            stacked = torch.stack([u.params[key] for u in updates])
            fisher = torch.stack([f[key].double() * c for f, c in zip(fishers, scale, strict=True)])
            out[key] = fisher_merge(stacked, fisher, counts, self.floor).to(device=value.device, dtype=value.dtype)
        return out
