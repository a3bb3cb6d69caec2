"""Task-vector merging of client updates: TIES-merging and task arithmetic, one parametrised merge.

For every trainable entry (LoRA factors A and B, and the head) the task vector of client k is
tau_k = theta_k - theta_global, and the new global value is

    theta_global + lam * merge(tau_1, ..., tau_K)

where ``merge`` is trim (keep the top ``density`` fraction of each client's tau by magnitude) ->
optional sign election (sign of the summed kept values) -> disjoint ``reduce`` over the clients that
kept an entry and agree with the elected sign (``ops/ties.py``).

Trim scope (``trim``):
- ``"global"`` (default; the LIVAR reference code, fed-mammoth ``_models/ties_merging.py``): each
  client's update over all trainable tensors is one vector with one magnitude threshold,
  ``quantile(|tau_k|, 1 - density)`` (numpy's linear interpolation), entries at or above it kept; a
  zero sum of kept values elects no sign (the entry stays 0). With unequal update scales (LoRA B vs A
  vs head) the tensors keep very different fractions.
- ``"tensor"`` (PEFT's ``merge_utils.ties``): every tensor is trimmed on its own, keeping the floor
  ``int(density * numel)`` largest entries per client; a zero sum elects +.

- TIES (Yadav et al., 2023, arXiv 2306.01708): density 0.3, sign election, disjoint mean, lam 0.4,
  global trim: the settings of the LIVAR authors' code base.
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
used). Neither method is a fixed point for identical clients unless lam = 1 (and, for TIES,
density = 1): with lam < 1 the global model only moves part of the way towards the clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from livar_bench.methods.base import Aggregator
from livar_bench.methods.describe import describe
from livar_bench.methods.fedavg import SPACE_HELP
from livar_bench.ops.lora import factor_keys, lora_delta, lora_modules, to_factors
from livar_bench.ops.ties import merge_task_vectors
from livar_bench.types import ClientUpdate, Params, RoundContext, client_scale

# Reference-code TIES settings (LIVAR authors' code base, PAPER.md): top 30 %, lambda 0.4.
TIES_DENSITY = 0.3
TIES_LAMBDA = 0.4
# Bumped when the resolved behaviour of an existing ``ties`` spec changes, so that its run id changes
# (config.RunSpec.run_id): 2 = global trim by default and PEFT's floor count for per-tensor trim.
TIES_RECIPE = 2

LAM_HELP = "scale of the merged task vector added to the global model"
REDUCE_HELP = ("combine the clients' kept entries by their mean (lam is then the fraction of the step towards "
               "the clients) or their sum (the task-arithmetic paper's form)")


@describe("ties", paper="https://arxiv.org/abs/2306.01708", label="TIES", order=40,
          summary="TIES-merging of client task vectors: trim, elect sign, disjoint mean, scale by lam.")
class TaskVectorMerge(Aggregator):
    """theta_global + lam * (trim -> elect -> disjoint reduce)(theta_k - theta_global).

    The defaults are TIES-merging's (registered as ``ties``); ``TaskArithmetic`` is the preset with
    ``density=1`` and no sign election.
    """

    def secure_aggregation(self) -> tuple[str, str]:
        return "individual", "trims and elects signs entry by entry over each client's task vector"

    density: Annotated[float, Field(ge=0, le=1, description="fraction of each client's task vector kept by the trim, "
                                                            "largest magnitudes first (1 keeps everything)")] = TIES_DENSITY
    sign_election: Annotated[bool, Field(description="keep only entries whose sign agrees with the elected sign "
                                                     "(that of the sum of the kept values)")] = True
    lam: Annotated[float, Field(description=LAM_HELP)] = TIES_LAMBDA
    reduce: Annotated[Literal["mean", "sum"], Field(description=REDUCE_HELP)] = "mean"
    trim: Annotated[Literal["global", "tensor"], Field(
        description="trim with one magnitude threshold over each client's whole update (global, the LIVAR "
                    "reference code) or one per tensor (tensor, PEFT)")] = "global"
    space: Annotated[Literal["factors", "product"], Field(description=SPACE_HELP)] = "factors"
    recipe: ClassVar[int | None] = TIES_RECIPE

    def accepts_mixed_ranks(self) -> bool:
        return self.space == "product"

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        starts, taus = self._task_vectors(global_params, updates, ctx)
        names = list(starts)
        if self.trim == "global":  # every client's whole update as one vector [K, N]: one trim per client
            joined = torch.cat([taus[n].reshape(len(updates), -1) for n in names], dim=1)
            flat = merge_task_vectors(joined, density=self.density, sign_election=self.sign_election,
                                      reduce=self.reduce, trim="global")
            merged, offset = {}, 0
            for n in names:
                merged[n] = flat[offset : offset + starts[n].numel()].reshape(starts[n].shape)
                offset += starts[n].numel()
        else:
            merged = {n: merge_task_vectors(taus[n], density=self.density, sign_election=self.sign_election,
                                            reduce=self.reduce) for n in names}
        new = {n: starts[n] + self.lam * merged[n] for n in names}
        out: Params = {k: new[k].to(v.dtype) for k, v in global_params.items() if k in new}
        modules = [n for n in names if n not in global_params]  # product space: dense module updates
        out.update(to_factors({m: new[m] for m in modules}, global_params, ctx.lora_scale))
        return {key: out[key] for key in global_params}

    def _task_vectors(self, global_params: Params, updates: Sequence[ClientUpdate],
                      ctx: RoundContext) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(start [*shape], task vectors [K, *shape]) per merged item, in ``global_params``' order: each
        tensor, or in product space each LoRA module's dense update s B A [out, in] in place of its factors."""
        wide = any(v.dtype == torch.float64 for v in global_params.values())
        acc = torch.float64 if wide else torch.float32
        modules = lora_modules(global_params) if self.space == "product" else []
        factor_of = {k: m for m in modules for k in factor_keys(m)}
        starts: dict[str, Tensor] = {}
        taus: dict[str, Tensor] = {}
        for key, base in global_params.items():
            if key in factor_of:
                module = factor_of[key]
                if module in starts:
                    continue
                a_key, b_key = factor_keys(module)
                starts[module] = lora_delta(global_params[b_key], global_params[a_key], ctx.lora_scale).to(acc)
                taus[module] = torch.stack([lora_delta(u.params[b_key], u.params[a_key], client_scale(u, ctx)).to(acc)
                                            for u in updates]) - starts[module]
            else:
                starts[key] = base.to(acc)
                taus[key] = torch.stack([u.params[key].to(acc) for u in updates]) - starts[key]
        return starts, taus


# The registered "ties" method is the general merge itself: its defaults are TIES' settings.
Ties = TaskVectorMerge


@describe("task_arithmetic", paper="https://arxiv.org/abs/2212.04089", label="Task arithmetic", order=30,
          summary="Task arithmetic: global + lam * mean (or sum) of client task vectors.")
class TaskArithmetic(Aggregator):
    """Task arithmetic on client task vectors: no trimming, no sign election.

    Its own class rather than a preset registration of ``TaskVectorMerge``: it has no density, sign
    election or trim to set, and no recipe version (its run ids predate TIES' recipe change).
    """

    def secure_aggregation(self) -> tuple[str, str]:
        if self.space == "product":
            return "individual", "the mean of the products B_k A_k of each client's factors"
        if self.reduce == "sum":
            return "individual", "the plain sum of the task vectors (secure aggregation here gives their mean)"
        return "sum", "the uniform mean of the client task vectors"

    def secure_weight(self, update: ClientUpdate) -> float:
        return 1.0  # a uniform mean of task vectors

    lam: Annotated[float, Field(description=LAM_HELP)] = TIES_LAMBDA
    reduce: Annotated[Literal["mean", "sum"], Field(description=REDUCE_HELP)] = "mean"
    space: Annotated[Literal["factors", "product"], Field(description=SPACE_HELP)] = "factors"

    def accepts_mixed_ranks(self) -> bool:
        return self.space == "product"

    @property
    def merge(self) -> TaskVectorMerge:
        # Per tensor: at density 1 both trims keep everything; "tensor" is the path task arithmetic has
        # always taken, so its numbers (and run ids) do not move.
        return TaskVectorMerge(density=1.0, sign_election=False, lam=self.lam, reduce=self.reduce, trim="tensor",
                               space=self.space)

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        return self.merge(global_params, updates, ctx)
