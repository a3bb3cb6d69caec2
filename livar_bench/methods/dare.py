"""DARE (Yu et al., ICML 2024, arXiv 2311.03099) alone and before TIES' sign election (``dare_ties``).

Each client's task vector tau_k = theta_k - theta_global is dropped entry by entry with probability
``drop`` and rescaled by 1 / (1 - drop) (``ops/dare.py``; masks drawn from the round's server generator,
clients in id order, so a resumed run draws the same masks), then

- ``dare``: theta_global + lam * mean_k (or sum_k) of the dropped task vectors: task arithmetic on DARE'd
  deltas; ``dare[drop=0]`` is ``task_arithmetic`` exactly;
- ``dare_ties``: theta_global + lam * disjoint mean of the entries whose sign agrees with the elected one
  (sign of the summed dropped values), PEFT's and mergekit's ``dare_ties``: the random drop replaces TIES'
  magnitude trim. ``density < 1`` adds TIES' trim after the drop, as FusionBench's DareTiesMerging does
  (there with density 0.2).

``space`` as for ``ties``: ``factors`` (default) treats LoRA A, B and the head as task vectors entry by
entry; ``product`` each module's dense s_k B_k A_k - s B A, truncated back to rank r by SVD. Clients are
weighted uniformly, as in the paper and the merge libraries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field

from livar_bench.methods.base import Aggregator
from livar_bench.methods.describe import describe
from livar_bench.methods.fedavg import SPACE_HELP
from livar_bench.methods.merge import LAM_HELP, REDUCE_HELP, TIES_LAMBDA, TaskVectorMerge
from livar_bench.methods.product_space import by_client
from livar_bench.ops.dare import dare
from livar_bench.ops.lora import to_factors
from livar_bench.ops.ties import merge_task_vectors
from livar_bench.types import ClientUpdate, Params, RoundContext

DARE_DROP = 0.5  # FusionBench's default sparsity ratio; the paper drops up to 0.9-0.99 of LLM SFT deltas


@describe("dare", paper="https://arxiv.org/abs/2311.03099", label="DARE", order=42,
          summary="Drop each task-vector entry with probability drop, rescale by 1/(1-drop), then task arithmetic.")
class Dare(Aggregator):
    """theta_global + lam * mean of the clients' dropped-and-rescaled task vectors."""

    drop: Annotated[float, Field(ge=0, lt=1, description="probability of dropping each entry of each client's "
                                                         "task vector")] = DARE_DROP
    lam: Annotated[float, Field(description=LAM_HELP)] = TIES_LAMBDA
    reduce: Annotated[Literal["mean", "sum"], Field(description=REDUCE_HELP)] = "mean"
    rescale: Annotated[bool, Field(description="divide the surviving entries by 1 - drop, keeping each entry's "
                                               "expectation (false: the paper's drop-only ablation)")] = True
    space: Annotated[Literal["factors", "product"], Field(description=SPACE_HELP)] = "factors"
    density: Annotated[float, Field(ge=0, le=1, description="TIES' magnitude trim after the drop, one threshold "
                                                            "per client (1: none, as PEFT; FusionBench trims to "
                                                            "0.2)")] = 1.0
    sign_election: ClassVar[bool] = False

    def accepts_mixed_ranks(self) -> bool:
        return self.space == "product"

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        updates = by_client(updates)
        # the task vectors (and product-space modules) exactly as ties/task_arithmetic form them
        starts, taus = TaskVectorMerge(space=self.space)._task_vectors(global_params, updates, ctx)
        names = list(starts)
        joined = torch.cat([taus[n].reshape(len(updates), -1) for n in names], dim=1)  # [K, N]: one draw order
        dropped, _ = dare(joined, self.drop, ctx.generator, rescale=self.rescale)
        merged = merge_task_vectors(dropped, density=self.density, sign_election=self.sign_election,
                                    reduce=self.reduce, trim="global" if self.density < 1 else "tensor")
        new, offset = {}, 0
        for n in names:
            size = starts[n].numel()
            new[n] = starts[n] + self.lam * merged[offset : offset + size].reshape(starts[n].shape)
            offset += size
        out: Params = {k: new[k].to(v.dtype) for k, v in global_params.items() if k in new}
        out.update(to_factors({m: new[m] for m in names if m not in global_params}, global_params, ctx.lora_scale))
        return {k: out[k].to(device=v.device, dtype=v.dtype) for k, v in global_params.items()}


@describe("dare_ties", paper="https://arxiv.org/abs/2311.03099", label="DARE-TIES", order=44, card="dare_ties",
          summary="DARE's drop and rescale in place of TIES' trim, then sign election and disjoint mean.")
class DareTies(Dare):
    """DARE, then TIES' sign election and disjoint mean (no magnitude trim unless ``density < 1``)."""

    sign_election: ClassVar[bool] = True
