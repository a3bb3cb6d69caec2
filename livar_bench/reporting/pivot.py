"""Tables of final values: cells (mean, std, n over seeds), their order and labels, and the pivot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from livar_bench.config import NON_IDENTITY_FIELDS
from livar_bench.errors import BenchError
from livar_bench.reporting.pooling import check_pooling

DEFAULT_METRIC = "acc"
METRIC_TITLES = {
    "acc": "Top-1 test accuracy (%) after the last round",
    "loss": "Test loss after the last round",
    ("test_local", "acc"): "Personalised accuracy (%): each client's own model on a test subset with its label "
                           "distribution, mean over clients, after the last round",
    ("test_local", "acc_worst10"): "Personalised accuracy (%) of the worst tenth of clients (own models, local "
                                   "test subsets), after the last round",
    ("test_local", "loss"): "Personalised test loss (own models, local test subsets), mean over clients, "
                            "after the last round",
    ("val", "acc"): "Top-1 validation accuracy (%) after the last round",
    ("privacy", "epsilon"): "Epsilon of client-level DP after the last round (at each run's delta; docs/privacy.md)",
}
LOWER_IS_BETTER = frozenset({"loss", "train_s", "aggregate_s", "eval_s", "wall_s", "global_stats_s",
                             "upload_bytes_per_client", "upload_signal_bytes_per_client", "download_bytes_per_client",
                             "wire_upload_bytes_per_client", "wire_download_bytes_per_client",
                             "peak_cuda_mem_bytes", "peak_host_rss_bytes", "nonfinite_signal_steps",
                             "nonfinite_signals_received", "epsilon"})
PERCENT_METRICS = frozenset({"acc", "acc_worst10"})  # stored as fractions, shown (and published) in percent
# Methods: display names and table order come from the registry (methods.display_name, table_order):
# baselines first, ours last, the order a paper table usually takes. A --order given by the user wins.
DEFAULT_METHOD_ORDER: tuple[str, ...] = ()
DEFAULT_LABELS = {
    "cifar100": "CIFAR-100", "imagenet-r": "ImageNet-R", "eurosat": "EuroSAT", "cub200": "CUB-200",
    "digits": "Digits", "synthetic": "Synthetic",
}
DATASET_ORDER = ("cifar100", "imagenet-r", "eurosat", "cub200", "digits", "synthetic")
KEY_TITLES = {"method": "Method", "dataset": "Dataset", "alpha": "α", "num_clients": "Clients",
              "backbone": "Backbone", "seed": "Seed"}


KEY_ALIASES = {"epochs": "local_epochs", "clients": "num_clients", "weights_hash": "weights_sha256",
               "hash": "weights_sha256", "rank": "lora_rank", "size": "input_size"}
_NOT_KEYS = frozenset({"run_id", "round", "split", "metric", "value", "seed", "partition_id", "client"})


def summarize(finals: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Mean, sample std (ddof=1; NaN for one seed) and number of seeds per cell, one row per cell."""
    grouped = finals.groupby(list(keys), dropna=False)["value"]
    out = grouped.agg(mean="mean", std="std", n="count").reset_index()
    out["seeds"] = grouped.apply(lambda v: ",".join(map(str, sorted(finals.loc[v.index, "seed"])))).values
    return out


# --- ordering and labels ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Style:
    """How keys are ordered and named in a rendered table.

    Attributes:
        method_order: methods in this order first, the rest alphabetically after.
        labels: display names for methods and datasets (unknown values are shown as they are).
    """

    method_order: tuple[str, ...] = DEFAULT_METHOD_ORDER
    labels: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LABELS))

    def sort_key(self, key: str, value: object) -> tuple:
        if key == "method":
            from livar_bench.methods import table_order

            text = str(value)
            given = self.method_order
            return (given.index(text), ()) if text in given else (len(given), table_order(text))
        if key == "dataset":
            order = DATASET_ORDER
        else:  # numbers in order, then text (a setting may mix them, e.g. an unset image size)
            number = isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))
            return (0, 0, value, "") if number else (0, 1, 0, str(value))
        text = str(value)
        return (order.index(text), "") if text in order else (len(order), text)

    def label(self, key: str, value: object) -> str:
        if key == "alpha":
            return f"α={value:g}" if isinstance(value, (int, float)) else f"α={value}"
        if key == "num_clients":
            return f"K={value}"
        if key == "method" and str(value) not in self.labels:
            from livar_bench.methods import display_name

            return display_name(str(value))
        if key in ("method", "dataset", "backbone", "partition"):
            return self.labels.get(str(value), str(value))
        if key == "weights_sha256" and isinstance(value, str):
            value = value[:12]  # enough to tell files apart
        return f"{key}={value}"


def parse_labels(items: Sequence[str] | None) -> dict[str, str]:
    """``["livar=LIVAR (ours)", ...]`` -> mapping, with a clear error for malformed items."""
    labels: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--label {item!r}: expected NAME=DISPLAY NAME, e.g. --label livar='LIVAR (ours)'")
        labels[key.strip()] = value.strip()
    return labels


# --- the pivot -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pivot:
    """A mean ± std table: ``mean``/``std``/``n`` frames share one row and column MultiIndex."""

    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    rows: tuple[str, ...]
    cols: tuple[str, ...]
    metric: str
    scale: float
    style: Style = field(default_factory=Style)
    split: str = "test"

    def best(self) -> pd.DataFrame:
        """Boolean frame: True where a cell has the best mean of its column (at display precision)."""
        shown = (self.mean * self.scale).round(2)
        target = shown.min() if self.metric in LOWER_IS_BETTER else shown.max()
        return shown.eq(target, axis=1) & shown.notna()

    def seeds_note(self) -> tuple[str, bool]:
        """("n = 3 seeds", True) when every cell has the same n; otherwise per-cell n is shown."""
        values = sorted({int(v) for v in self.n.to_numpy().ravel() if not math.isnan(v)})
        if len(values) == 1:
            return f"mean ± std over n = {values[0]} seed{'s' if values[0] != 1 else ''}", True
        return "mean ± std over n seeds (n given per cell)", False


def groupable(finals: pd.DataFrame, settings: pd.DataFrame | None = None) -> list[str]:
    """Keys a table can be laid out by: the run settings (stored spec.json) and the result columns that
    describe a run, not the seed (pooled) or the ids."""
    keys = {c for c in finals.columns if c not in _NOT_KEYS}
    if settings is not None:
        keys |= {c for c in settings.columns if c not in _NOT_KEYS and c not in NON_IDENTITY_FIELDS}
    return sorted(keys)


def _as_key(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unset"  # an unset setting (e.g. image_size: the default) or one older runs did not record
    return value


def with_settings(finals: pd.DataFrame, keys: Sequence[str], settings: pd.DataFrame | None) -> pd.DataFrame:
    """``finals`` with a column for each key that is a stored setting (pretrained, image_size, lr, ...).

    Raises:
        BenchError: a key that is neither a result column nor a stored setting, naming the valid ones.
    """
    extra = [k for k in dict.fromkeys(keys) if k not in finals.columns]
    if not extra:
        return finals
    valid = groupable(finals, settings)
    for key in extra:
        if settings is None or key not in settings.columns or key in NON_IDENTITY_FIELDS or key in _NOT_KEYS:
            raise BenchError(f"cannot group by {key!r}; choose from {', '.join(valid)} "
                             f"(aliases: {', '.join(f'{a}={k}' for a, k in KEY_ALIASES.items())})")
    out = finals.copy()
    for key in extra:
        out[key] = out["run_id"].map(settings[key].map(_as_key))
    return out


def check_named_once(rows: Sequence[str], cols: Sequence[str]) -> None:
    """Refuse a key named twice in ``rows``/``cols`` or in both (aliases count as their key): a table
    axis cannot hold one setting twice.

    Raises:
        BenchError: naming the key, how it was written and where.
    """
    seen: dict[str, tuple[str, str]] = {}  # key -> (how it was written, option) of its first mention
    for option, keys in (("--rows", rows), ("--cols", cols)):
        for written in keys:
            key = KEY_ALIASES.get(written, written)
            if key in seen:
                first, where = seen[key]
                place = f"in {option}" if where == option else "in both --rows and --cols"
                spelled = "" if first == written else f" (as {first!r} and {written!r})"
                raise BenchError(f"{key} is named twice {place}{spelled}; name each setting once across "
                                 "--rows and --cols (default: --rows method --cols dataset,alpha)")
            seen[key] = (written, option)


def make_pivot(
    finals: pd.DataFrame, rows: Sequence[str], cols: Sequence[str], metric: str = DEFAULT_METRIC,
    style: Style | None = None, settings: pd.DataFrame | None = None,
) -> Pivot:
    """Pool seeds into cells (after the pooling checks) and lay them out as rows x cols."""
    style = style or Style()
    check_named_once(rows, cols)
    rows, cols = tuple(KEY_ALIASES.get(k, k) for k in rows), tuple(KEY_ALIASES.get(k, k) for k in cols)
    finals = with_settings(finals, (*rows, *cols), settings)
    check_pooling(finals, (*rows, *cols), settings)
    summary = summarize(finals, (*rows, *cols))

    def table(column: str) -> pd.DataFrame:
        wide = summary.pivot_table(index=list(rows), columns=list(cols), values=column, aggfunc="first", dropna=False)
        wide = _sort_axis(wide, rows, style, axis=0)
        return _sort_axis(wide, cols, style, axis=1)

    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    mean = table("mean").dropna(how="all", axis=0).dropna(how="all", axis=1)  # combinations never run
    split = str(finals["split"].iloc[0]) if "split" in finals and len(finals) else "test"
    return Pivot(mean, table("std").reindex_like(mean), table("n").reindex_like(mean), rows, cols, metric, scale,
                 style, split)


def _sort_axis(frame: pd.DataFrame, keys: Sequence[str], style: Style, axis: int) -> pd.DataFrame:
    index = frame.index if axis == 0 else frame.columns
    tuples = [t if isinstance(t, tuple) else (t,) for t in index]
    order = sorted(range(len(tuples)), key=lambda i: [style.sort_key(k, v) for k, v in zip(keys, tuples[i], strict=True)])
    return frame.iloc[order] if axis == 0 else frame.iloc[:, order]
