"""Data for the SHAP analysis: per (round, client, LoRA module) training signals and a merge outcome.

The LIVAR paper derives its LoRA weighting table from SHAP attributions of a surrogate model of "merge
quality" fitted on intrinsic training signals, but it publishes neither the surrogate, its training
data nor its target. This module defines a target of our own and says exactly what it is.

Procedure (per communication round, FedAvg being the merge that every probe is taken around):

1. Every sampled client trains locally from the global tensors and accumulates LIVAR's path-integral
   signal S = sum over steps |sum(grad * delta theta)| for each LoRA factor (``Signal.LORA_SIGNAL``).
2. Each (client k, module m) becomes one sample with features: the A- and B-factor signals, their
   *quantile positions* within the round (empirical CDF position rank / (n - 1) over all (client,
   module) values of that factor, the quantity LIVAR's thresholds A25/A50/B60/B80 cut), the block's
   relative depth, the module kind (qkv, proj, fc1, fc2) and the client's share of the round's samples.
3. OUTCOME (marginal contribution of client k to module m): the merged model is the sample-weighted
   FedAvg merge w_j = n_j / N. Client k's weight on module m only (A and B factors together, as LIVAR
   weights them) is multiplied by exp(+step) and by exp(-step), the module's weights are renormalised,
   every other tensor is left at the FedAvg merge, and the held-out cross-entropy L of each merged
   model is measured. The outcome is the central difference

       outcome = -(L(+step) - L(-step)) / (2 * step)

   i.e. minus the derivative of held-out loss with respect to the log-weight of client k on module m:
   positive when giving the client more say on that module helps the merged model.
4. Held-out data: the run's validation carve (``RunSpec.val_fraction`` > 0: a seeded fraction of each
   client's partition that no client trains on), capped at ``max_val_samples`` by a seeded subsample.
   The test set stays untouched for reporting. The partition is the one a ``livar-bench run`` with the
   same settings and ``val_fraction`` draws, so the clients see exactly the data of such a run.

Cost: two held-out evaluations per probed pair. ``probe_pairs`` limits the pairs per round (a seeded
subset; quantile positions are still computed over all pairs) and ``max_val_samples`` the held-out set.
Losses stay on the device during probing and are read once per round.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from livar_bench.client.phase import train_clients
from livar_bench.client.train import LocalSettings, autocast, evaluate
from livar_bench.config import RunSpec
from livar_bench.data import DatasetBundle, subsample
from livar_bench.data.base import ImageSplit
from livar_bench.errors import BenchError
from livar_bench.federation import sample_clients, setup_run
from livar_bench.methods.spec import parse_method
from livar_bench.ops.weighted import sample_weights, weighted_average_params
from livar_bench.seeding import STREAM_INIT, derive_seed, generator
from livar_bench.types import ClientUpdate, Params, Signal

# Random-stream keys of this module; distinct from the run's streams (seeding.py) so they never coincide.
STREAM_VALIDATION, STREAM_PROBE = 101, 102
KINDS = ("qkv", "proj", "fc1", "fc2")
OUTCOME_DEFINITION = (
    "-(L(+s) - L(-s)) / (2 s): minus the central-difference derivative of held-out cross-entropy L of "
    "the merged model with respect to the log-weight of client k on LoRA module m (A and B together), "
    "around the sample-weighted FedAvg merge; held-out = seeded validation carve of the clients' training data, seen by no client"
)

Event = Callable[..., None]


@dataclass(frozen=True)
class ProbeSettings:
    """How the outcome is measured.

    Attributes:
        max_val_samples: cap on the held-out set (cost is linear in it); None = no cap.
        probe_pairs: (client, module) pairs probed per round, a seeded subset; None = all.
        step: log-weight perturbation s of the central difference.
    """

    max_val_samples: int | None = 512
    probe_pairs: int | None = None
    step: float = 0.5

    def __post_init__(self) -> None:
        if self.max_val_samples is not None and self.max_val_samples < 1:
            raise BenchError("--max-val-samples must be at least 1")
        if self.probe_pairs is not None and self.probe_pairs < 1:
            raise BenchError("--probe-pairs must be at least 1 (or omit it to probe every pair)")
        if not (math.isfinite(self.step) and self.step > 0):
            raise BenchError(f"--probe-step must be a positive number, got {self.step}")


@dataclass(frozen=True)
class Collection:
    """The collected samples (one row per probed (round, client, module)) and run information."""

    table: pd.DataFrame
    info: dict[str, Any]


def quantile_positions(values: Tensor) -> Tensor:
    """Empirical CDF position of each value in [0, 1]: (average rank) / (n - 1); 0.5 for n = 1.

    With this definition ``position >= q`` exactly when ``value >= torch.quantile(values, q)`` (linear
    interpolation) for distinct values, so bucketing positions at the rule's levels reproduces LIVAR's
    bucketing of raw signals at quantile thresholds.
    """
    flat = values.reshape(-1).double()
    n = flat.numel()
    if n == 1:
        return torch.full_like(flat, 0.5).reshape(values.shape)
    order = torch.argsort(flat, stable=True)
    ranks = torch.empty_like(flat)
    ranks[order] = torch.arange(n, dtype=flat.dtype, device=flat.device)
    # Ties get their average rank so that equal signals get equal positions.
    uniq, inverse = torch.unique(flat, return_inverse=True)
    if uniq.numel() < n:
        sums = torch.zeros(uniq.numel(), dtype=flat.dtype, device=flat.device).index_add_(0, inverse, ranks)
        counts = torch.bincount(inverse, minlength=uniq.numel()).to(flat.dtype)
        ranks = (sums / counts)[inverse]
    return (ranks / (n - 1)).reshape(values.shape)


def module_of(key: str) -> str:
    """``blocks.3.attn.qkv.lora_A`` -> ``blocks.3.attn.qkv``."""
    return re.sub(r"\.lora_[AB]$", "", key)


def describe_module(module: str, depth: int) -> dict[str, Any]:
    """Block index, relative depth in [0, 1] and kind (qkv/proj/fc1/fc2) of a LoRA module."""
    match = re.search(r"blocks\.(\d+)\.", module)
    block = int(match.group(1)) if match else 0
    kind = module.rsplit(".", 1)[-1]
    return {"module": module, "block": block, "depth": block / max(depth - 1, 1), "kind": kind,
            "kind_code": KINDS.index(kind) if kind in KINDS else len(KINDS)}


@torch.no_grad()
def heldout_loss(model: Any, params: Params, data: ImageSplit, transform: Any, batch_size: int,
                 dtype: torch.dtype | None) -> Tensor:
    """Mean cross-entropy of ``params`` on ``data`` as a 0-dim device tensor (no host read)."""
    model.load_params(params)
    model.eval()
    device = data.labels.device
    total = torch.zeros((), device=device, dtype=torch.float32)
    for begin in range(0, len(data), batch_size):
        x = transform.eval(data.images[begin : begin + batch_size])
        with autocast(device, dtype):
            logits = model(x)
        total += torch.nn.functional.cross_entropy(logits.float(), data.labels[begin : begin + batch_size],
                                                   reduction="sum")
    return total / len(data)


def perturbed_weights(base: Tensor, clients: Tensor, step: float) -> Tensor:
    """Rows of renormalised weights: client ``clients[i]``'s weight times exp(+step) (row 2i) and
    exp(-step) (row 2i + 1). ``base`` [K] sums to one; returns [2 * len(clients), K]."""
    rows = base.repeat(2 * len(clients), 1)  # [2P, K]
    factor = torch.tensor([math.exp(step), math.exp(-step)], dtype=base.dtype, device=base.device).repeat(len(clients))
    index = clients.repeat_interleave(2)
    rows[torch.arange(len(index), device=base.device), index] *= factor
    return rows / rows.sum(dim=1, keepdim=True)


def _choose_pairs(num_clients: int, num_modules: int, limit: int | None, seed: int, round_: int) -> Tensor:
    """Flat indices k * M + m of the pairs probed this round (all, or a seeded subset)."""
    total = num_clients * num_modules
    if limit is None or limit >= total:
        return torch.arange(total)
    g = torch.Generator().manual_seed(derive_seed(seed, STREAM_PROBE, round_))
    return torch.randperm(total, generator=g)[:limit].sort().values


def probe_round(model: Any, updates: list[ClientUpdate], modules: list[str], pairs: Tensor, val: ImageSplit,
                transform: Any, batch_size: int, dtype: torch.dtype | None, step: float) -> tuple[Params, Tensor, Tensor]:
    """FedAvg merge of ``updates`` and the held-out losses of the perturbed merges.

    Returns:
        (merged params, base loss 0-dim, losses [P, 2] for (+step, -step) of each pair in ``pairs``).
    """
    weights = sample_weights([u.num_samples for u in updates])
    merged = weighted_average_params([u.params for u in updates], weights)
    base_loss = heldout_loss(model, merged, val, transform, batch_size, dtype)
    which_module, which_client = pairs % len(modules), pairs // len(modules)
    losses: list[Tensor] = []
    visited: list[Tensor] = []
    for m in torch.unique(which_module).tolist():  # one batched mix per module
        positions = torch.nonzero(which_module == m).flatten()
        keys = (f"{modules[m]}.lora_A", f"{modules[m]}.lora_B")
        ref = merged[keys[0]]
        w = perturbed_weights(weights, which_client[positions], step).to(device=ref.device, dtype=torch.float32)
        mixed = {}
        for key in keys:
            stacked = torch.stack([u.params[key].float() for u in updates])  # [K, *shape]
            mixed[key] = (w @ stacked.reshape(len(updates), -1)).reshape(-1, *stacked.shape[1:]).to(ref.dtype)
        for row in range(w.shape[0]):  # rows alternate (+step, -step) per pair
            params = {**merged, keys[0]: mixed[keys[0]][row], keys[1]: mixed[keys[1]][row]}
            losses.append(heldout_loss(model, params, val, transform, batch_size, dtype))
        visited.append(positions)
    if not losses:
        return merged, base_loss, torch.zeros(0, 2, device=base_loss.device)
    grouped = torch.stack(losses).reshape(-1, 2)  # [P, 2] in visiting order
    out = torch.empty_like(grouped)
    out[torch.cat(visited).to(out.device)] = grouped  # back to the order of ``pairs``
    return merged, base_loss, out


def collect(spec: RunSpec, probe: ProbeSettings, *, bundle: DatasetBundle | None = None,
            on_event: Event | None = None) -> Collection:
    """Run ``spec.rounds`` FedAvg rounds and record one sample per probed (round, client, module)."""
    emit = on_event or (lambda *a, **k: None)
    if spec.val_fraction <= 0:
        raise BenchError("explain needs a held-out split to score merges; set --val-fraction above 0")
    s = setup_run(spec, bundle)
    val = subsample(s.val, probe.max_val_samples, derive_seed(spec.seed, STREAM_VALIDATION))
    train_samples = sum(s.clients.size(k) for k in range(len(s.clients)))
    settings = LocalSettings(spec.local_epochs, spec.batch_size, spec.lr, spec.weight_decay, s.dtype)
    global_params: Params = {k: v.to(s.device) for k, v in s.model.initial_params(generator(spec.seed, STREAM_INIT)).items()}
    lora_keys = [k for k in global_params if ".lora_" in k]
    modules = sorted({module_of(k) for k in lora_keys}, key=lambda m: (describe_module(m, 1)["block"], m))
    depth = 1 + max(describe_module(m, 1)["block"] for m in modules)
    meta = [describe_module(m, depth) for m in modules]
    frames, history = [], []
    fedavg = parse_method("fedavg")  # the clients studied are those of a FedAvg run: its client side
    for round_ in range(1, spec.rounds + 1):
        results = train_clients(  # the client phase of `run`, same seeding
            s.model, global_params, {k: s.clients[k] for k in sample_clients(spec, round_)}, s.train_tf,
            fedavg.objective, settings, seed=spec.seed, round_=round_, num_classes=s.bundle.num_classes,
            requires={Signal.LORA_SIGNAL}, pack=spec.pack, frozen=fedavg.frozen_keys(global_params),
            on_client=lambda k, r, at=round_: emit("client", round=at, client=k, loss=r.mean_loss))
        updates = [r.update for r in results.values()]
        sig_a = torch.stack([torch.stack([u.lora_signals[f"{m}.lora_A"] for m in modules]) for u in updates]).cpu()
        sig_b = torch.stack([torch.stack([u.lora_signals[f"{m}.lora_B"] for m in modules]) for u in updates]).cpu()
        pairs = _choose_pairs(len(updates), len(modules), probe.probe_pairs, spec.seed, round_)
        emit("probe", round=round_, pairs=len(pairs))
        merged, base_loss, losses = probe_round(s.model, updates, modules, pairs, val, s.eval_tf,
                                                spec.eval_batch_size, s.dtype, probe.step)
        losses, base = losses.double().cpu(), float(base_loss)  # the one read of this round's losses
        test = evaluate(s.model, merged, s.test, s.eval_tf, spec.eval_batch_size, s.dtype)
        history.append({"round": round_, "val_loss": base, "test_acc": test["acc"], "test_loss": test["loss"]})
        emit("round", round=round_, metrics={"acc": test["acc"], "loss": test["loss"]}, val_loss=base)
        frames.append(_round_frame(round_, updates, meta, sig_a, sig_b, pairs, losses, base, probe.step))
        global_params = merged
    table = pd.concat(frames, ignore_index=True)
    if not np.isfinite(table["outcome"]).all():
        raise BenchError("held-out losses were not finite during probing; lower --lr or --probe-step")
    info = {"dataset": spec.dataset, "alpha": spec.alpha, "partition": spec.partition, "seed": spec.seed,
            "backbone": spec.backbone, "num_clients": spec.num_clients, "rounds": spec.rounds,
            "local_epochs": spec.local_epochs, "lr": spec.lr, "lora_rank": spec.lora_rank,
            "train_samples": train_samples, "val_fraction": spec.val_fraction,
            "heldout_samples": len(val), "probe_step": probe.step,
            "probe_pairs_per_round": probe.probe_pairs, "modules": len(modules), "outcome": OUTCOME_DEFINITION,
            "history": history, "device": str(s.device)}
    return Collection(table, info)


def _round_frame(round_: int, updates: list[ClientUpdate], meta: list[dict[str, Any]], sig_a: Tensor, sig_b: Tensor,
                 pairs: Tensor, losses: Tensor, base_loss: float, step: float) -> pd.DataFrame:
    """One row per probed (client, module) pair of a round."""
    num_modules = len(meta)
    pos_a, pos_b = quantile_positions(sig_a), quantile_positions(sig_b)  # [K, M] over all pairs of the round
    total = sum(u.num_samples for u in updates)
    rows = []
    for i, flat in enumerate(pairs.tolist()):
        k, m = divmod(flat, num_modules)
        up, down = float(losses[i, 0]), float(losses[i, 1])
        rows.append({
            "round": round_, "client": updates[k].client_id, **meta[m],
            "client_samples": updates[k].num_samples, "client_share": updates[k].num_samples / total,
            "signal_a": float(sig_a[k, m]), "signal_b": float(sig_b[k, m]),
            "a_pos": float(pos_a[k, m]), "b_pos": float(pos_b[k, m]),
            "loss_up": up, "loss_down": down, "base_loss": base_loss,
            "outcome": -(up - down) / (2 * step),
        })
    return pd.DataFrame(rows)
