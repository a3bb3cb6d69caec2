"""LIVAR (Fiorini et al., 2025, "Intrinsic Training Signals for Federated Learning Aggregation",
arXiv 2507.06813): two independently switchable parts; a part that is off is FedAvg.

Head (``head=True``), variance-weighted per class (paper sec. 3.1). For class c and client k holding
c, v_kc is the mean over feature dimensions of the per-dimension variance of the client's pre-logit
features of class c; w_kc = v_kc / sum_j v_jc over the holders, and head row c (weight row and bias
entry) is sum_k w_kc head_k[c].
- ``head_subset="correct"`` (default, the paper's text): variances over the correctly classified
  samples; ``"all"``: over every sample of the class (the reference code).
- A class no client holds keeps the previous global row. If every holder's variance is 0 or undefined
  (e.g. at most one correctly classified sample each, possible with ``head_subset="correct"`` in early
  rounds), ``head_fallback="previous"`` (default, the reference code's ``weighted_head_per_class``)
  keeps the previous global row too; ``"count"`` averages the holders' rows weighted by their class
  counts.
- ``head_count_weighting=True`` multiplies v_kc by the client's class count n_kc (PAPER.md lists
  "head weights ignore sample counts" as a reference-code defect; off by default, as in the paper).

LoRA (``lora=True``), from intrinsic signals (paper sec. 3.2). Each client sends, per LoRA factor, its
accumulated path-integral signal S (``client/collectors/lora_signal.py``; a non-finite step adds
nothing). Thresholds are quantiles over all (client, module) values of the round (A25, A50 of the
A-signals; B60, B80 of the B-signals, ``rule``); each (client, module) gets the raw weight
``rule.table[B bucket, A bucket]``; raw weights are renormalised over clients per module
(sample-count weights if they sum to zero), and the module's A and B factors are each the weighted
mean with those weights. Factors are averaged separately, not their products.
``rule`` is "paper" (the published constants, ``livar_rule.PAPER_RULE``) or the path of a rule JSON file
as written by ``livar-bench explain``.

Evaluation (``eval_delta``). The reference code sends the LIVAR-weighted A, B to the clients but
evaluates the backbone with W0 + scale * sum_k (n_k/N) B_k A_k, so LIVAR's LoRA weights never affect
the reported accuracy of the last round. ``"livar"`` (default, the paper's intent) evaluates what is
sent. ``"reference"`` reproduces the reference: ``evaluation_deltas`` returns, per module, the dense
correction scale * (sum_k n_k/N B_k A_k - B_glob A_glob) that the federation loop adds to the frozen
base weight for evaluation only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor

from livar_bench.digest import json_digest
from livar_bench.methods.base import Aggregator
from livar_bench.methods.describe import describe
from livar_bench.methods.livar_rule import LivarRule, bucket, load_rule
from livar_bench.ops.lora import factor_keys, lora_delta, lora_modules
from livar_bench.ops.weighted import normalise, sample_weights, weighted_average
from livar_bench.types import ClientUpdate, Params, RoundContext, ServerState, Signal


@describe("livar", paper="https://arxiv.org/abs/2507.06813", label="LIVAR", order=100,
          summary="Variance-weighted head per class; LoRA factors weighted by intrinsic training signals.")
class Livar(Aggregator):
    """Variance-weighted head + signal-weighted LoRA factors; either part can be switched to FedAvg."""

    def secure_aggregation(self) -> tuple[str, str]:
        if not (self.head or self.lora):
            return "sum", "the sample-weighted mean of the client tensors (both LIVAR parts off)"
        return "individual", "per-client weights from each client's signals and class statistics"

    head: Annotated[bool, Field(description="merge the head per class with variance weights (false: FedAvg of "
                                            "the head)")] = True
    lora: Annotated[bool, Field(description="merge each LoRA module with weights from the clients' intrinsic "
                                            "signals (false: FedAvg of the factors)")] = True
    head_subset: Annotated[Literal["correct", "all"], Field(
        description="class variances over the correctly classified samples (correct, the paper) or over every "
                    "sample (all, the reference code)")] = "correct"
    head_count_weighting: Annotated[bool, Field(description="multiply each client's class variance by its class "
                                                            "count")] = False
    rule: Annotated[str, Field(description="LoRA weighting rule: the published one (paper) or the path of a rule "
                                           "JSON file written by livar-bench explain",
                               examples=["paper", "rules/livar.json"])] = "paper"
    eval_delta: Annotated[Literal["livar", "reference"], Field(
        description="evaluate what clients receive (livar), or as the reference code with the FedAvg of the "
                    "clients' products in the base weights (reference)")] = "livar"
    head_fallback: Annotated[Literal["previous", "count"], Field(
        description="a class whose holders all have zero variance keeps the previous global row (previous) or "
                    "averages the holders by class count (count)")] = "previous"

    def __post_init__(self) -> None:
        # Parsed once, here, so that a missing or malformed rule file is a BenchError at spec time, not
        # after the first round of training. Derived from ``rule``, so not a hidden hyperparameter.
        object.__setattr__(self, "_rule", load_rule(self.rule))

    def content_digest(self) -> str | None:
        """Hash of the rule's numbers, so that editing a rule file in place changes the run id."""
        if self.rule == "paper":
            return None
        payload = {k: v for k, v in self.weighting_rule.to_json().items() if k != "provenance"}
        return json_digest(payload, 16)

    @property
    def weighting_rule(self) -> LivarRule:
        """The LoRA weighting rule in use (the paper's or one loaded from ``rule``)."""
        return self._rule  # type: ignore[attr-defined]

    @property
    def requires(self) -> frozenset[Signal]:
        needed = set()
        if self.head:
            needed.add(Signal.CLASS_STATS)
        if self.lora:
            needed.add(Signal.LORA_SIGNAL)
        return frozenset(needed)

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        fedavg = sample_weights([u.num_samples for u in updates])
        out: Params = {}
        handled: set[str] = set()
        if self.head:
            out.update(self._merge_head(global_params, updates, ctx))
            handled.update(ctx.head_keys)
        if self.lora:
            modules = lora_modules(global_params)
            weights = lora_weights(updates, modules, self.weighting_rule)  # [K, M]
            for m, module in enumerate(modules):
                for key in factor_keys(module):
                    out[key] = weighted_average([u.params[key] for u in updates], weights[:, m])
                    handled.add(key)
        for key in global_params:  # whatever is left (a part switched off) is FedAvg
            if key not in handled:
                out[key] = weighted_average([u.params[key] for u in updates], fedavg)
        return {key: out[key] for key in global_params}

    def _merge_head(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        w_key, b_key = ctx.head_keys
        old_w, old_b = global_params[w_key], global_params[b_key]
        weights, held = head_weights(updates, self.head_subset, self.head_count_weighting,
                                     self.head_fallback)  # [K, C], [C]
        weights = weights.to(old_w.device)
        held = held.to(old_w.device)
        stacked_w = torch.stack([u.params[w_key].double() for u in updates])  # [K, C, D]
        stacked_b = torch.stack([u.params[b_key].double() for u in updates])  # [K, C]
        new_w = torch.einsum("kc,kcd->cd", weights, stacked_w)
        new_b = (weights * stacked_b).sum(0)
        return {
            w_key: torch.where(held[:, None], new_w, old_w.double()).to(old_w.dtype),
            b_key: torch.where(held, new_b, old_b.double()).to(old_b.dtype),
        }

    def evaluation_deltas(self, state: ServerState, updates: Sequence[ClientUpdate],
                          ctx: RoundContext) -> dict[str, Tensor] | None:
        """Per LoRA module, the dense correction to add to the frozen base weight during evaluation.

        Only for ``eval_delta="reference"`` (else None): the evaluated weight becomes
        W0 + scale * sum_k (n_k/N) B_k A_k, as in the reference code, while ``global_params`` (the
        round's new global tensors in ``state.params``, what clients receive) are left as they are.

        Returns:
            module name (a path inside the PEFT model, e.g. ``blocks.0.attn.qkv``) -> [out, in] float32.
        """
        if self.eval_delta != "reference":
            return None
        global_params = state.params
        weights = sample_weights([u.num_samples for u in updates])
        deltas: dict[str, Tensor] = {}
        for module in lora_modules(global_params):
            a_key, b_key = factor_keys(module)
            # sum_k w_k B_k A_k as one product: [out, K*r] @ [K*r, in].
            b_cat = torch.cat([w * u.params[b_key].float() for w, u in zip(weights.tolist(), updates, strict=True)], dim=1)
            a_cat = torch.cat([u.params[a_key].float() for u in updates], dim=0)
            target = lora_delta(b_cat, a_cat, ctx.lora_scale)
            deltas[module] = target - lora_delta(global_params[b_key], global_params[a_key], ctx.lora_scale)
        return deltas


def head_weights(updates: Sequence[ClientUpdate], subset: Literal["correct", "all"] = "correct",
                 count_weighting: bool = False,
                 fallback: Literal["previous", "count"] = "previous") -> tuple[Tensor, Tensor]:
    """LIVAR's per-class head weights.

    Args:
        updates: client updates carrying ``class_stats``.
        subset: "correct" uses ``var_correct``, "all" uses ``var``.
        count_weighting: multiply each variance by the client's class count.
        fallback: for a held class whose holders all have zero variance, "previous" leaves the row to
            the previous global one (``held`` is False there), "count" weights holders by class count.

    Returns:
        (weights [K, C] float64, summing to 1 over clients for every class to merge,
        held [C] bool: the classes whose row is merged; the others keep the previous global row).
    """
    if any(u.class_stats is None for u in updates):
        raise ValueError("LIVAR head aggregation needs class statistics from every client (Signal.CLASS_STATS)")
    stats = [u.class_stats for u in updates]
    device = stats[0].var.device
    var = torch.stack([(s.var_correct if subset == "correct" else s.var).double().mean(-1) for s in stats])  # [K, C]
    var = torch.where(torch.isfinite(var), var, torch.zeros_like(var)).clamp(min=0)
    counts = torch.stack([u.class_counts.to(device=device, dtype=torch.float64) for u in updates])  # [K, C]
    holders = counts > 0
    raw = var * holders
    if count_weighting:
        raw = raw * counts
    total = raw.sum(0)  # [C]
    count_total = counts.sum(0)
    by_variance = raw / torch.where(total > 0, total, torch.ones_like(total))
    by_count = counts / torch.where(count_total > 0, count_total, torch.ones_like(count_total))
    if fallback == "previous":
        return by_variance, total > 0
    return torch.where(total > 0, by_variance, by_count), count_total > 0


def lora_weights(updates: Sequence[ClientUpdate], modules: Sequence[str], rule: LivarRule) -> Tensor:
    """LIVAR's per-(client, module) LoRA weights, renormalised over clients.

    Args:
        updates: client updates carrying ``lora_signals`` (factor key -> 0-dim signal).
        modules: LoRA module names (``<module>.lora_A`` / ``.lora_B`` are the signal keys).
        rule: quantile levels and the raw weight table.

    Returns:
        [K, M] float64 weights; each column sums to 1.
    """
    if any(u.lora_signals is None for u in updates):
        raise ValueError("LIVAR LoRA merging needs LoRA signals from every client (Signal.LORA_SIGNAL)")
    keys = [factor_keys(m) for m in modules]
    # float64 so that thresholds that fall exactly on a signal value (quantile positions are exact
    # for many sizes) land where the paper's inclusive middle bucket puts them.
    a = torch.stack([torch.stack([u.lora_signals[ka] for ka, _ in keys]) for u in updates]).double()  # [K, M]
    b = torch.stack([torch.stack([u.lora_signals[kb] for _, kb in keys]) for u in updates]).double()
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        # one NaN would make every threshold NaN and every module's weights uniform, silently; the client
        # drops such steps and the Flower server such received values (drop_nonfinite_received)
        raise ValueError("a LoRA signal reaching LIVAR's aggregator is not finite; pass received updates "
                         "through client.collectors.lora_signal.drop_nonfinite_received")
    qa = torch.quantile(a.flatten(), torch.tensor(rule.a_quantiles, dtype=torch.float64, device=a.device))
    qb = torch.quantile(b.flatten(), torch.tensor(rule.b_quantiles, dtype=torch.float64, device=b.device))
    raw = rule.table.to(a.device)[bucket(b, qb[0], qb[1]), bucket(a, qa[0], qa[1])]  # [K, M]
    fallback = sample_weights([u.num_samples for u in updates]).to(a.device)[:, None]
    return normalise(raw, fallback=fallback)
