"""Task-vector merging of client updates: TIES-merging and task arithmetic, one parametrised merge.

For every trainable tensor (LoRA factors A and B separately, and the head) the task vector of client k
is tau_k = theta_k - theta_global, and the new global tensor is

    theta_global + lam * merge(tau_1, ..., tau_K)

where ``merge`` is trim (keep the top ``density`` fraction of each client's tau by magnitude, per
tensor) -> optional sign election (sign of the summed kept values) -> disjoint ``reduce`` over the
clients that kept an entry and agree with the elected sign (``ops/ties.py``).

- TIES (Yadav et al., 2023, arXiv 2306.01708): density 0.3, sign election, disjoint mean, lam 0.4,
  the settings of the LIVAR authors' code base.
- Task arithmetic (Ilharco et al., 2023, arXiv 2212.04089): no trimming, no election. The paper adds
  the task vectors, ``lam * sum_k tau_k``. We default to the *mean* (``reduce="mean"``) with the same
  lam 0.4 as TIES: with a sum, the right lam scales as 1/K (sum with lam equals mean with lam*K), so a
  default would be wrong for every other number of clients; with the mean, lam is the fraction of the
  step towards the clients' average, and TIES vs task arithmetic differ only in trim + elect.
  ``reduce="sum"`` gives the paper's literal form. With lam = 1 the mean form equals FedAvg with
  uniform (not sample-count) weights.

``space="factors"`` (default, as the LIVAR reference code does) merges LoRA factors A and B as separate
tensors. ``space="product"`` merges each module's dense task vector s_k B_k A_k - s B A (exact products,
trimmed and elected entry-wise over the [out, in] matrix) and truncates the result back to the global
rank by SVD (PEFT's ``ties_svd`` / ``task_arithmetic_svd``); it accepts clients of different ranks.

Clients are weighted uniformly, as in both papers and the reference code's TIES (sample counts are not
used). Trimming is per tensor (the reference code merges parameter by parameter), not over the whole
flattened update. Neither method is a fixed point for identical clients unless lam = 1 (and, for TIES,
density = 1): with lam < 1 the global model only moves part of the way towards the clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from livar_bench.methods.base import Aggregator
from livar_bench.ops.lora import factor_keys, lora_delta, lora_modules, to_factors
from livar_bench.ops.ties import merge_task_vectors
from livar_bench.types import ClientUpdate, Params, RoundContext, Signal, client_scale

# Reference-code TIES settings (LIVAR authors' code base, PAPER.md): top 30 %, lambda 0.4.
TIES_DENSITY = 0.3
TIES_LAMBDA = 0.4


@dataclass(frozen=True)
class TaskVectorMerge(Aggregator):
    """theta_global + lam * (trim -> elect -> disjoint reduce)(theta_k - theta_global).

    The defaults are TIES-merging's (registered as ``ties``); ``TaskArithmetic`` is the preset with
    ``density=1`` and no sign election.
    """

    density: float = TIES_DENSITY
    sign_election: bool = True
    lam: float = TIES_LAMBDA
    reduce: Literal["mean", "sum"] = "mean"
    space: Literal["factors", "product"] = "factors"
    requires: ClassVar[frozenset[Signal]] = frozenset()

    def __post_init__(self) -> None:
        if self.space not in ("factors", "product"):
            raise ValueError(f"space must be factors or product, got {self.space!r}")
        if not 0.0 <= self.density <= 1.0:
            raise ValueError(f"density must be in [0, 1], got {self.density}")
        if not torch.isfinite(torch.tensor(self.lam)):
            raise ValueError(f"lam must be a finite number, got {self.lam}")
        if self.reduce not in ("mean", "sum"):
            raise ValueError(f"reduce must be mean or sum, got {self.reduce!r}")

    def accepts_mixed_ranks(self) -> bool:
        return self.space == "product"

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        out: Params = {}
        modules = lora_modules(global_params) if self.space == "product" else []
        in_product = {k for m in modules for k in factor_keys(m)}
        for key, base in global_params.items():
            if key in in_product:
                continue
            acc = torch.float64 if base.dtype == torch.float64 else torch.float32
            start = base.to(acc)
            taus = torch.stack([u.params[key].to(acc) for u in updates]) - start  # [K, *shape]
            merged = merge_task_vectors(taus, density=self.density, sign_election=self.sign_election,
                                        reduce=self.reduce)
            out[key] = (start + self.lam * merged).to(base.dtype)
        dense = {}
        for module in modules:
            a_key, b_key = factor_keys(module)
            start = lora_delta(global_params[b_key], global_params[a_key], ctx.lora_scale)  # [out, in]
            taus = torch.stack([lora_delta(u.params[b_key], u.params[a_key], client_scale(u, ctx)) - start
                                for u in updates])  # [K, out, in]
            merged = merge_task_vectors(taus, density=self.density, sign_election=self.sign_election,
                                        reduce=self.reduce)
            dense[module] = start + self.lam * merged
        out.update(to_factors(dense, global_params, ctx.lora_scale))
        return {key: out[key] for key in global_params}


# The registered "ties" method is the general merge itself: its defaults are TIES' settings.
Ties = TaskVectorMerge


@dataclass(frozen=True)
class TaskArithmetic(Aggregator):
    """Task arithmetic on client task vectors: no trimming, no sign election (preset of the merge)."""

    lam: float = TIES_LAMBDA
    reduce: Literal["mean", "sum"] = "mean"
    space: Literal["factors", "product"] = "factors"
    requires: ClassVar[frozenset[Signal]] = frozenset()

    def __post_init__(self) -> None:
        _ = self.merge  # validate at construction, so a bad value is reported before any training

    def accepts_mixed_ranks(self) -> bool:
        return self.space == "product"

    @property
    def merge(self) -> TaskVectorMerge:
        return TaskVectorMerge(density=1.0, sign_election=False, lam=self.lam, reduce=self.reduce, space=self.space)

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        return self.merge(global_params, updates, ctx)
