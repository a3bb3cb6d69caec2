"""The one writer of a run's folder: its records, its tidy rows, its checkpoint and its metrics.

    <out>/runs/.partial/<run_id>/spec.json       the fully resolved RunSpec (+ the weights' identity)
    <out>/runs/.partial/<run_id>/env.json        versions, device, git sha, host, threads, engine
    <out>/runs/.partial/<run_id>/partition.json  per-client class counts, sizes, heterogeneity, fingerprint
    <out>/runs/.partial/<run_id>/checkpoint.pt   round, server state and rows so far (digest-checked)
    <out>/runs/.partial/<run_id>/metrics.csv     tidy rows: one per (round, split, metric)

``RunStore.commit`` then writes DONE and moves the folder into ``<out>/runs/<run_id>``. The round loop,
the Flower engine, the benchmarks and the tests all write run folders through ``RunFolder`` and
``tidy_rows``, so the format has one definition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from livar_bench.config import RunSpec
from livar_bench.data.partition import Partition, heterogeneity
from livar_bench.data.partitioners import record as partition_files
from livar_bench.store import RunStore, load_checkpoint, save_checkpoint, write_csv, write_json


def tidy_rows(spec: RunSpec, round_: int, split: str, values: dict[str, float]) -> list[dict[str, Any]]:
    """One tidy row per metric of ``values``, with the run's identifying columns."""
    base = {
        "run_id": spec.run_id, "method": spec.method, "dataset": spec.dataset, "backbone": spec.backbone,
        "partition": spec.partition, "alpha": spec.alpha, "num_clients": spec.num_clients, "seed": spec.seed,
        "partition_id": spec.partition_id,
    }
    return [{**base, "round": round_, "split": split, "metric": k, "value": float(v)} for k, v in values.items()]


def partition_record(spec: RunSpec, partition: Partition, split: Any, num_classes: int,
                     domain_names: Any = None) -> dict[str, Any]:
    """partition.json of a run: scheme, settings, sizes, class counts (and domains) and heterogeneity."""
    labels = split.labels.numpy()
    domains = None if split.domains is None else split.domains.numpy()
    return partition_files.summary(spec.partition_spec, partition, labels, num_classes,
                                   partition_id=spec.partition_id, domains=domains, domain_names=domain_names)


def with_heterogeneity(frame: pd.DataFrame, counts: np.ndarray) -> pd.DataFrame:
    """``frame`` with the measured heterogeneity of the partition as columns right after ``alpha``, so that
    tables can show what a given alpha actually produced."""
    frame = frame.copy()
    at = frame.columns.get_loc("alpha") + 1
    for offset, (name, value) in enumerate(heterogeneity(counts).items()):
        frame.insert(at + offset, name, value)
    return frame


class RunFolder:
    """The partial folder of one run while it is computed (``RunStore.start`` made it)."""

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self.path: Path = store.start(run_id)

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def write_records(self, spec: RunSpec, provenance: dict[str, Any], env: dict[str, Any],
                      partition: dict[str, Any]) -> None:
        """spec.json (the spec and the weights' identity), env.json and partition.json."""
        write_json(self.path / "spec.json", {"run_id": spec.run_id, **spec.model_dump(mode="json"), **provenance})
        write_json(self.path / "env.json", {**env, **provenance})
        write_json(self.path / "partition.json", partition)

    def write_partition_plot(self, spec: RunSpec, record: dict[str, Any], class_names: Any,
                             partitions_dir: Path) -> None:
        """partition.png (the label distribution, as Flower Datasets draws it), drawn once per partition id."""
        partition_files.save_plot(self.path / "partition.png", partitions_dir / f"{spec.partition_id}.png",
                                  np.asarray(record["class_counts"]), spec.partition_title, class_names)

    def load_checkpoint(self, map_location: Any = "cpu") -> dict | None:
        """The last round's checkpoint, or None (none yet, or a damaged one, which is set aside)."""
        return load_checkpoint(self.checkpoint_path, map_location=map_location)

    def save_checkpoint(self, round_: int, state: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        save_checkpoint(self.checkpoint_path, {"round": round_, "state": state, "rows": rows})

    def write_metrics(self, frame: pd.DataFrame) -> None:
        write_csv(self.path / "metrics.csv", frame)

    def commit(self, replace: bool = False) -> Path:
        """DONE (with the files' digests) and the move into place; the finished run's folder."""
        return self.store.commit(self.run_id, replace=replace)


def nonfinite_total(frame: pd.DataFrame, metric: str = "nonfinite_signal_steps") -> int:
    """Client steps of a whole run whose LoRA signal contribution was dropped as non-finite (or, with
    ``metric="nonfinite_signals_received"``, received signal values the server dropped)."""
    rows = frame[(frame["split"] == "train") & (frame["metric"] == metric)]
    return int(rows["value"].sum())


def final_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """Last-round test metrics of a run."""
    test = frame[frame["split"] == "test"]
    last = test[test["round"] == test["round"].max()]
    return dict(zip(last["metric"], last["value"], strict=True))
