"""Shared test helper: the scientific content of a results folder, to compare folders across crashes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from livar_bench import reporting as rp


def science(out: Path) -> pd.DataFrame:
    """Every tidy row of the folder's finished runs except the cost rows (timings differ), in a fixed order."""
    tidy = rp.collect(out)
    tidy = tidy[tidy["split"] != "cost"]
    cols = ["run_id", "round", "split", "metric", "value"]
    return tidy.sort_values(cols[:4])[cols].reset_index(drop=True)
