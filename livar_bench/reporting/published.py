"""Published numbers: a user-supplied CSV (method, dataset, alpha, metric, value, source), validated, and
our numbers beside them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from livar_bench.errors import BenchError
from livar_bench.reporting.pivot import PERCENT_METRICS, summarize
from livar_bench.reporting.pooling import check_pooling

PUBLISHED_COLUMNS = ("method", "dataset", "alpha", "metric", "value", "source")


# --- published numbers -----------------------------------------------------------------------------

def load_published(path: str | Path) -> pd.DataFrame:
    """Read and validate a published-numbers CSV (columns method,dataset,alpha,metric,value,source).

    Accuracy values are in percent, as papers print them. The frame may be empty (header only).
    """
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"published numbers file not found: {p}; pass --published FILE with columns "
                         f"{','.join(PUBLISHED_COLUMNS)}")
    try:
        frame = pd.read_csv(p, dtype={"method": str, "dataset": str, "metric": str, "source": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise BenchError(f"{p} is not a readable CSV ({err}); expected columns {','.join(PUBLISHED_COLUMNS)}") from None
    missing = [c for c in PUBLISHED_COLUMNS if c not in frame.columns]
    extra = [c for c in frame.columns if c not in PUBLISHED_COLUMNS]
    if missing or extra:
        raise BenchError(f"{p}: columns must be exactly {','.join(PUBLISHED_COLUMNS)}"
                         f"{'; missing ' + ','.join(missing) if missing else ''}"
                         f"{'; unexpected ' + ','.join(extra) if extra else ''}")
    for column in ("alpha", "value"):
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = frame.index[numbers.isna()].tolist()
        if bad:
            raise BenchError(f"{p}: {column} must be a number on every row; line {bad[0] + 2} has "
                             f"{frame[column].iloc[bad[0]]!r}")
        frame[column] = numbers.astype(float)
    blank = frame.index[frame["source"].fillna("").str.strip() == ""].tolist()
    if blank:
        raise BenchError(f"{p}: line {blank[0] + 2} has no source; say where each number comes from (e.g. 'Table 1')")
    acc = frame[frame["metric"].isin(PERCENT_METRICS)]
    if ((acc["value"] < 0) | (acc["value"] > 100)).any():
        raise BenchError(f"{p}: accuracy values must be in percent (0-100)")
    for column in ("method", "dataset", "metric"):
        frame[column] = frame[column].str.strip().str.lower()
    return frame


def compare_frame(ours: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Ours (mean, std, n per method/dataset/alpha/metric, in displayed units) beside published values.

    Rows present on either side are kept; ``diff`` = ours - published where both exist.
    """
    keys = ["method", "dataset", "alpha", "metric"]
    left = ours.assign(alpha=ours["alpha"].round(6))
    right = published.assign(alpha=published["alpha"].round(6)).rename(columns={"value": "published"})
    merged = left.merge(right, on=keys, how="outer")
    merged["diff"] = merged["mean"] - merged["published"]
    return merged[[*keys, "mean", "std", "n", "published", "diff", "source"]].sort_values(keys).reset_index(drop=True)


def ours_summary(finals_by_metric: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Mean/std/n per (method, dataset, alpha, metric) in displayed units (percent for accuracy)."""
    parts = []
    for metric, finals in finals_by_metric.items():
        check_pooling(finals, ("method", "dataset", "alpha"))
        summary = summarize(finals, ("method", "dataset", "alpha"))
        scale = 100.0 if metric in PERCENT_METRICS else 1.0
        summary[["mean", "std"]] = summary[["mean", "std"]] * scale
        parts.append(summary.assign(metric=metric))
    return pd.concat(parts, ignore_index=True)
