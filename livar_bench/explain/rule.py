"""From SHAP attributions to a LIVAR rule in the paper's form: base value + 3x3 bucket offsets.

Buckets follow the paper: A-signal quantile position cut at levels 0.25/0.5, B-signal at 0.6/0.8
(rows = B bucket low/mid/high, columns = A bucket low/mid/high), with the inclusive middle bucket of
``livar_bench.methods.livar_rule.bucket``.

1. Contribution of a cell, c_ij: the mean over samples falling in cell (i, j) of the summed SHAP values
   of the signal features (A and B positions), in outcome units. Context features (depth, module kind,
   client share) are not part of LIVAR's rule; their attributions are left out, which is what reading a
   rule "off the SHAP values" of the signal features means.
2. Mapping the outcome scale to weights. The outcome is a derivative of held-out loss with respect to a
   client's *log* merge weight, so the natural step from the FedAvg weights is multiplicative
   (an exponentiated-gradient step): weight_ij = base * exp(eta * c_ij), where
   - base = 1 / K, the mean FedAvg weight of K clients, is what the SHAP expected value (the outcome of
     an average sample, whose cell contribution is 0) maps to;
   - eta is chosen so that the largest/smallest bucket weight ratio equals ``contrast`` (default: the
     paper's own table, 0.19313978 / 0.03813978 = 5.06), so the two tables differ in shape, not in an
     arbitrary scale. Any eta > 0 gives the same bucket order.
   Weights are positive by construction (no clipping), and offsets are weight_ij - base. Because LIVAR
   renormalises weights over clients per module, only weight ratios matter: base cancels.
3. Cells without samples get contribution 0 (weight = base) and are flagged in the provenance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from livar_bench.errors import BenchError
from livar_bench.explain.surrogate import SIGNAL_FEATURES, Attribution
from livar_bench.methods.livar_rule import PAPER_RULE, LivarRule, bucket

BUCKETS = ("low", "mid", "high")
PAPER_CONTRAST = float(PAPER_RULE.table.max() / PAPER_RULE.table.min())


@dataclass(frozen=True)
class DerivedRule:
    """The rule plus what it was computed from (for the comparison table)."""

    rule: LivarRule
    contributions: np.ndarray  # [3, 3] mean signal SHAP per cell, outcome units
    counts: np.ndarray  # [3, 3] samples per cell
    eta: float


def cells(a_pos: np.ndarray, b_pos: np.ndarray, a_levels: tuple[float, float],
          b_levels: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(B bucket, A bucket) of each sample from its quantile positions, using LIVAR's ``bucket``."""
    a = torch.from_numpy(np.array(a_pos, dtype=np.float64))  # a copy: inputs may be read-only views
    b = torch.from_numpy(np.array(b_pos, dtype=np.float64))
    a_bucket = bucket(a, torch.tensor(a_levels[0], dtype=a.dtype), torch.tensor(a_levels[1], dtype=a.dtype))
    b_bucket = bucket(b, torch.tensor(b_levels[0], dtype=b.dtype), torch.tensor(b_levels[1], dtype=b.dtype))
    return b_bucket.numpy(), a_bucket.numpy()


def cell_means(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` per (row, col) cell of a 3x3 grid (0 where empty) and the cell counts."""
    flat = rows * 3 + cols
    counts = np.bincount(flat, minlength=9).astype(np.int64)
    sums = np.bincount(flat, weights=values, minlength=9)
    means = np.divide(sums, counts, out=np.zeros(9), where=counts > 0)
    return means.reshape(3, 3), counts.reshape(3, 3)


def derive_rule(
    table: pd.DataFrame,
    attribution: Attribution,
    *,
    num_clients: int,
    a_quantiles: tuple[float, float] = PAPER_RULE.a_quantiles,
    b_quantiles: tuple[float, float] = PAPER_RULE.b_quantiles,
    contrast: float = PAPER_CONTRAST,
    provenance: dict[str, Any] | None = None,
) -> DerivedRule:
    """Turn SHAP attributions of the signal features into a ``LivarRule`` (see the module docstring)."""
    if not (math.isfinite(contrast) and contrast >= 1):
        raise BenchError(f"--contrast must be a number >= 1 (largest / smallest bucket weight), got {contrast}")
    if num_clients < 1:
        raise BenchError("num_clients must be at least 1")
    if len(table) != attribution.values.shape[0]:
        raise ValueError(f"{len(table)} samples but {attribution.values.shape[0]} rows of SHAP values")
    signal_cols = [attribution.features.index(f) for f in SIGNAL_FEATURES]
    signal_shap = attribution.values[:, signal_cols].sum(axis=1)
    rows, cols = cells(table["a_pos"].to_numpy(), table["b_pos"].to_numpy(), a_quantiles, b_quantiles)
    contributions, counts = cell_means(signal_shap, rows, cols)
    filled = contributions[counts > 0]
    spread = float(filled.max() - filled.min()) if filled.size else 0.0
    eta = math.log(contrast) / spread if spread > 0 else 0.0
    base = 1.0 / num_clients
    weights = base * np.exp(eta * contributions)
    offsets = tuple(tuple(float(v) for v in row) for row in (weights - base))
    empty = [f"B {BUCKETS[i]} / A {BUCKETS[j]}" for i in range(3) for j in range(3) if counts[i, j] == 0]
    info = {
        **(provenance or {}),
        "mapping": "weight = base * exp(eta * c), c = mean SHAP(a_pos) + SHAP(b_pos) of the cell's samples; "
                   "base = 1/num_clients (the SHAP expected value's weight); eta sets max/min weight = contrast",
        "shap_expected_value": attribution.expected_value,
        "eta": eta,
        "contrast": contrast,
        "cell_contributions": contributions.tolist(),
        "cell_counts": counts.tolist(),
        "empty_cells": empty,
        "surrogate": attribution.model,
        "surrogate_r2_test": attribution.r2_test,
        "surrogate_r2_train": attribution.r2_train,
        "n_samples": int(len(table)),
    }
    rule = LivarRule(a_quantiles=tuple(a_quantiles), b_quantiles=tuple(b_quantiles), base=base, offsets=offsets,
                     provenance=info)
    return DerivedRule(rule, contributions, counts, eta)


def comparison_frame(derived: DerivedRule, paper: LivarRule = PAPER_RULE) -> pd.DataFrame:
    """One row per bucket: derived and paper weights, offsets, and each table's rank of the bucket.

    Weights are also given normalised to sum to one over the 9 buckets, since only ratios matter.
    """
    ours, theirs = derived.rule.table.numpy(), paper.table.numpy()
    rows = []
    for i in range(3):
        for j in range(3):
            rows.append({"b_bucket": BUCKETS[i], "a_bucket": BUCKETS[j], "n_samples": int(derived.counts[i, j]),
                         "contribution": float(derived.contributions[i, j]),
                         "derived_offset": float(ours[i, j] - derived.rule.base), "derived_weight": float(ours[i, j]),
                         "derived_share": float(ours[i, j] / ours.sum()),
                         "paper_offset": float(theirs[i, j] - paper.base), "paper_weight": float(theirs[i, j]),
                         "paper_share": float(theirs[i, j] / theirs.sum())})
    frame = pd.DataFrame(rows)
    frame["derived_rank"] = frame["derived_weight"].rank(ascending=False, method="min").astype(int)
    frame["paper_rank"] = frame["paper_weight"].rank(ascending=False, method="min").astype(int)
    return frame


def rank_agreement(frame: pd.DataFrame) -> float:
    """Spearman correlation between the derived and the paper's bucket weights (nan if either is flat)."""
    a, b = frame["derived_weight"], frame["paper_weight"]
    if a.nunique() < 2 or b.nunique() < 2:
        return float("nan")
    return float(a.rank().corr(b.rank()))


def markdown_table(frame: pd.DataFrame) -> str:
    """The comparison as a Markdown table (weights as shares of the 9-bucket total, and offsets)."""
    header = ("| B bucket | A bucket | n | derived offset | derived weight | derived share | paper offset | "
              "paper weight | paper share |")
    lines = [header, "|" + "---|" * 9]
    for r in frame.itertuples():
        lines.append(f"| {r.b_bucket} | {r.a_bucket} | {r.n_samples} | {r.derived_offset:+.5f} | "
                     f"{r.derived_weight:.5f} | {r.derived_share:.3f} | {r.paper_offset:+.5f} | "
                     f"{r.paper_weight:.5f} | {r.paper_share:.3f} |")
    return "\n".join(lines) + "\n"
