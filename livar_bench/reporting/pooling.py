"""The one pooling guard: which rows may be pooled into one number, and a clear refusal otherwise.

A table cell (or a paired comparison) pools runs that differ only in their seed, and compares methods
only on the same data:

- the rows of one (dataset, alpha, seed) cell must come from one partition (``partition_id``); otherwise
  the methods were trained on different client data and comparing them is meaningless;
- with table ``keys`` (the settings that make a cell: rows and columns), two runs may not share a cell
  and a seed: they are different experiments (another learning rate, say) that a mean would mix.

Each refusal names the settings that differ, from the rows' own columns or, where they are not columns,
from the runs' stored settings (``collect.run_settings``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from livar_bench.config import NON_IDENTITY_FIELDS
from livar_bench.errors import BenchError

CELL = ("dataset", "alpha", "seed")
# Row columns that, when they differ inside a cell, explain why partition ids differ.
PARTITION_COLUMNS = ("partition", "num_clients", "max_train_samples", "min_client_samples", "val_fraction",
                     "tv_distance", "class_coverage")
# Settings that change the partition; a table that has one of them among its keys keeps them apart.
_PARTITION_KEYS = ("partition", "num_clients")


def check_pooling(frame: pd.DataFrame, keys: Sequence[str] | None = None, settings: pd.DataFrame | None = None) -> None:
    """Refuse to pool rows that are not seeds of one experiment on one partition.

    Args:
        frame: tidy rows or final values (run_id, dataset, alpha, seed, partition_id, ...).
        keys: the settings that make a table cell (its rows and columns); None for a paired comparison,
            whose cell is (dataset, alpha, seed) and whose duplicates the comparison refuses itself.
        settings: optional stored RunSpecs indexed by run_id, to name differing settings that are not
            columns of ``frame``.

    Raises:
        BenchError: naming the cell, what differs, and what to do.
    """
    require_columns(frame, [*CELL, "partition_id"])
    if keys is not None:
        _check_cells(frame, keys, settings)
    _check_partitions(frame, [k for k in _PARTITION_KEYS if keys is not None and k in keys and k in frame.columns],
                      settings)


def require_columns(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """Refuse a frame that lacks ``columns`` (it was not collected from a results folder)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise BenchError(f"results table lacks column(s) {', '.join(missing)}; collect it with livar-bench's run store")


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds, so messages print ``0.5``, not ``np.float64(0.5)``."""
    return value.item() if isinstance(value, np.generic) else value


def _differing(settings: pd.DataFrame | None, run_ids: Sequence[str]) -> str:
    if settings is None:
        return "unknown settings"
    sub = settings.loc[[r for r in run_ids if r in settings.index]]
    ignore = set(NON_IDENTITY_FIELDS) | {"seed"}
    cols = [c for c in sub.columns if c not in ignore and sub[c].astype(str).nunique() > 1]
    return ", ".join(cols) or "no stored setting"


def _check_cells(frame: pd.DataFrame, keys: Sequence[str], settings: pd.DataFrame | None) -> None:
    cell = [*keys, "seed"]
    counts = frame.groupby(cell, dropna=False)["run_id"].nunique()
    if (counts > 1).any():
        where = counts[counts > 1].index[0]
        ids = frame.set_index(cell).loc[[where], "run_id"].unique().tolist()
        raise BenchError(
            f"{len(ids)} runs fall into one table cell with the same seed ({ {k: _plain(v) for k, v in zip(cell, where, strict=True)} }); they differ "
            f"in {_differing(settings, ids)}. Put such runs in separate --out folders or add the setting to --rows/--cols"
        )


def _check_partitions(frame: pd.DataFrame, extra: Sequence[str], settings: pd.DataFrame | None) -> None:
    group = [*CELL, *extra]
    ids = frame.groupby(group, dropna=False)["partition_id"].nunique()
    bad = ids[ids > 1]
    if bad.empty:
        return
    where = {k: _plain(v) for k, v in zip(group, bad.index[0], strict=True)}
    mask = pd.Series(True, index=frame.index)
    for key, value in where.items():
        mask &= frame[key].isna() if pd.isna(value) else frame[key] == value
    cell = frame[mask]
    differing = [c for c in PARTITION_COLUMNS if c in cell.columns and cell[c].nunique(dropna=False) > 1]
    if settings is not None and "run_id" in cell.columns:
        specs = settings.loc[[r for r in cell["run_id"].unique() if r in settings.index]]
        differing += [c for c in PARTITION_COLUMNS if c in specs.columns and c not in differing
                      and specs[c].nunique(dropna=False) > 1]
    why = (f"differing settings: {', '.join(differing)}" if differing
           else "the differing setting is not a column here (e.g. max_train_samples, min_client_samples or "
                "val_fraction; see each run's spec.json)")
    raise BenchError(
        f"cannot pool results of {', '.join(f'{k}={v}' for k, v in where.items())}: they come from "
        f"{int(bad.iloc[0])} different partitions ({', '.join(sorted(map(str, cell['partition_id'].unique())))}; "
        f"{why}); select one partition setting (or separate --out folders) before comparing"
        + (f" ({len(bad)} cells affected)" if len(bad) > 1 else "")
    )
