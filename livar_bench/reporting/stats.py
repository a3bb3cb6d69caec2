"""Paired comparisons and ablation tables over tidy metric rows.

Why paired: within one (dataset, alpha, seed) cell every method trains on the same partition, from the
same initial LoRA/head weights, with the same client data order (the federation derives every random
stream from the seed). Seed-to-seed variation is therefore shared, and the per-seed difference
``method - baseline`` has far less variance than either method's accuracy. We report its mean over
seeds with a two-sided 95% Student-t interval (n - 1 degrees of freedom).

Reporting policy:
- the default figure is the **last-round test** metric, and outputs say so (``round="last"``);
- a best-round figure (``round="best"``) picks each run's round by its **validation** split (carved
  from the clients' training data, ``val_fraction > 0``) and reports the test metric at that round;
  choosing the round on the test set is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from livar_bench.errors import BenchError
from livar_bench.reporting.pooling import check_pooling, require_columns

# Two-sided 97.5% Student-t quantiles for 1..30 degrees of freedom (fallback when scipy is absent).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_quantile(dof: int, q: float = 0.975) -> float:
    """Quantile of Student's t with ``dof`` degrees of freedom (scipy, else a table for q = 0.975)."""
    if dof < 1:
        return math.nan
    try:
        from scipy.stats import t
    except ImportError:
        if q != 0.975:
            raise BenchError("confidence levels other than 95% need scipy; pip install scipy") from None
        return _T975[dof - 1] if dof <= len(_T975) else 1.96
    return float(t.ppf(q, dof))


def select_values(frame: pd.DataFrame, metric: str = "acc", split: str = "test",
                  round: int | str = "last") -> pd.DataFrame:
    """One value per run: ``metric`` on ``split`` at ``round`` ("last", "best" or a round number).

    ``"best"`` picks each run's round by the same metric on the validation split (highest value, or
    lowest for a loss) and reports ``split`` at that round.

    Returns:
        The chosen rows (one per run_id) with their ``round`` column.
    """
    require_columns(frame, ["run_id", "round", "split", "metric", "value"])
    rows = frame[(frame["split"] == split) & (frame["metric"] == metric)]
    if rows.empty:
        raise BenchError(f"no {split} rows of metric {metric!r} in the results; check --metric and --split")
    if round == "last":
        last = rows.groupby("run_id")["round"].transform("max")
        return rows[rows["round"] == last]
    if round == "best":
        if split == "val":
            raise BenchError("round=best reports a test figure chosen on the validation split; use split=test")
        val = frame[(frame["split"] == "val") & (frame["metric"] == metric)]
        if val.empty:
            raise BenchError("best-round figures are chosen on a validation split, never on the test set; "
                             "rerun with `val_fraction: 0.1` in the run or sweep config (or report round=last)")
        ascending = metric.endswith("loss")
        best = (val.sort_values(["run_id", "value", "round"], ascending=[True, ascending, True])
                .drop_duplicates("run_id")[["run_id", "round"]])
        return rows.merge(best, on=["run_id", "round"])
    try:
        wanted = int(round)
    except (TypeError, ValueError):
        raise BenchError(f"round must be last, best or a round number, not {round!r}") from None
    chosen = rows[rows["round"] == wanted]
    if chosen.empty:
        raise BenchError(f"no {split} {metric} rows at round {wanted}")
    return chosen


def round_label(metric: str, split: str, round: int | str) -> str:
    """Human label of a reported figure, e.g. ``test acc, last round``."""
    if round == "best":
        return f"{split} {metric} at the best validation round"
    return f"{split} {metric}, {'last round' if round == 'last' else f'round {round}'}"


def paired_differences(frame: pd.DataFrame, baseline: str, metric: str = "acc", split: str = "test",
                       round: int | str = "last", confidence: float = 0.95,
                       settings: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean paired difference ``method - baseline`` across seeds, with a Student-t confidence interval.

    Pairs are formed within each (dataset, [backbone,] alpha, seed) cell; only seeds where both the
    method and the baseline have a run count. The interval is ``mean ± t_{(1+c)/2, n-1} * sd / sqrt(n)``
    with the sample standard deviation (n - 1); with one seed it is undefined (NaN).

    Returns:
        One row per (method, dataset, [backbone,] alpha): method, baseline, dataset, alpha, n_seeds,
        mean_diff, ci_low, ci_high, method_mean, baseline_mean, reported (e.g. "test acc, last round").
        The label is also in ``result.attrs["reported"]``. ``settings`` (stored RunSpecs by run_id) only
        sharpens the error message when partitions differ (see ``pooling.check_pooling``).
    """
    check_pooling(frame, settings=settings)
    chosen = select_values(frame, metric, split, round)
    keys = ["dataset", *(["backbone"] if "backbone" in chosen.columns and chosen["backbone"].nunique() > 1 else []),
            "alpha"]
    if baseline not in set(chosen["method"]):
        known = ", ".join(sorted(chosen["method"].unique()))
        raise BenchError(f"baseline {baseline!r} has no runs here; choose one of: {known}")
    dup = chosen.duplicated([*keys, "seed", "method"], keep=False)
    if dup.any():
        first = chosen[dup].iloc[0]
        raise BenchError(
            f"{int(dup.sum())} runs share a (method, dataset, alpha, seed) cell, e.g. {first['method']} on "
            f"{first['dataset']} alpha={first['alpha']} seed={first['seed']} (runs with other settings such as "
            "rounds or lr); filter the table to one setting per method before a paired comparison"
        )
    wide = chosen.pivot_table(index=[*keys, "seed"], columns="method", values="value", aggfunc="first")
    label = round_label(metric, split, round)
    q = (1 + confidence) / 2
    out = []
    for method in [m for m in wide.columns if m != baseline]:
        diffs = (wide[method] - wide[baseline]).dropna()
        both = wide.loc[diffs.index]
        for group, d in diffs.groupby(level=list(range(len(keys)))):
            n = len(d)
            mean = float(d.mean())
            half = t_quantile(n - 1, q) * float(d.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
            cell = both.loc[d.index]
            group = group if isinstance(group, tuple) else (group,)
            out.append({"method": method, "baseline": baseline, **dict(zip(keys, group, strict=True)),
                        "n_seeds": n, "mean_diff": mean, "ci_low": mean - half, "ci_high": mean + half,
                        "method_mean": float(cell[method].mean()), "baseline_mean": float(cell[baseline].mean()),
                        "reported": label})
    columns = ["method", "baseline", *keys, "n_seeds", "mean_diff", "ci_low", "ci_high", "method_mean",
               "baseline_mean", "reported"]
    result = pd.DataFrame(out, columns=columns)
    result.attrs["reported"] = label
    return result


# The LIVAR ablation of configs/ablation.yaml: display label -> method spec (canonical form).
ABLATION_VARIANTS: dict[str, str] = {
    "FedAvg": "fedavg",
    "LIVAR head only": "livar[lora=false]",
    "LIVAR LoRA only": "livar[head=false]",
    "LIVAR (head + LoRA)": "livar",
}


def ablation_summary(frame: pd.DataFrame, variants: Mapping[str, str] | None = None, metric: str = "acc",
                     split: str = "test", round: int | str = "last") -> pd.DataFrame:
    """Mean, std and n over seeds per (variant, dataset, alpha).

    Args:
        variants: label -> method spec (as stored in the ``method`` column), in display order; default:
            every method present, labelled by its spec.
    """
    check_pooling(frame)
    chosen = select_values(frame, metric, split, round)
    variants = dict(variants) if variants else {m: m for m in sorted(chosen["method"].unique())}
    missing = [spec for spec in variants.values() if spec not in set(chosen["method"])]
    if missing:
        raise BenchError(f"no runs of {', '.join(missing)} in the results; run the ablation sweep first")
    label_of = {spec: label for label, spec in variants.items()}
    chosen = chosen[chosen["method"].isin(label_of)].assign(variant=lambda f: f["method"].map(label_of))
    stats = chosen.groupby(["variant", "dataset", "alpha"])["value"].agg(["mean", "std", "count"]).reset_index()
    order = {label: i for i, label in enumerate(variants)}
    stats = stats.sort_values(["variant", "dataset", "alpha"], key=lambda s: s.map(order) if s.name == "variant" else s)
    stats.attrs["reported"] = round_label(metric, split, round)
    return stats.reset_index(drop=True)


def ablation_table(frame: pd.DataFrame, variants: Mapping[str, str] | None = None, metric: str = "acc",
                   split: str = "test", round: int | str = "last", scale: float = 100.0,
                   digits: int = 2) -> pd.DataFrame:
    """Rows = variant, columns = (dataset, alpha), cells ``mean ± std`` (× ``scale``, e.g. percent).

    A cell with one seed shows the mean alone. ``result.attrs["reported"]`` names the figure.
    """
    stats = ablation_summary(frame, variants, metric, split, round)

    def cell(row: pd.Series) -> str:
        text = f"{row['mean'] * scale:.{digits}f}"
        return text if row["count"] < 2 or np.isnan(row["std"]) else f"{text} ± {row['std'] * scale:.{digits}f}"

    table = stats.assign(cell=stats.apply(cell, axis=1)).pivot(index="variant", columns=["dataset", "alpha"],
                                                                values="cell")
    table = table.reindex(list(dict.fromkeys(stats["variant"])))
    table.attrs["reported"] = stats.attrs["reported"]
    return table
