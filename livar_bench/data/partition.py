"""Partition records: the per-client index sets saved under ``<out>/partitions/``, verified on reuse,
and the validation carve. The partitioners themselves live in ``data/partitioners/`` (one registry, one
spec grammar); their names are re-exported here for code that imported them from this module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from livar_bench.data.partitioners import Partition, dirichlet_partition, iid_partition
from livar_bench.data.partitioners.measures import heterogeneity
from livar_bench.errors import BenchError

__all__ = ["DamagedPartition", "Partition", "carve_validation", "dirichlet_partition", "heterogeneity",
           "iid_partition", "partition_from_record", "partition_record", "read_partition_file"]


def carve_validation(
    partition: Partition, fraction: float, rngs: list[np.random.Generator]
) -> tuple[Partition, Partition]:
    """Hold out a seeded ``fraction`` of each client's own training samples as validation data.

    The carve happens after partitioning, client by client, so the clients' label skew (and the
    partition id's meaning) is unchanged and no client ever trains on another client's samples:
    validation data is what a real federation could hold out. ``floor(fraction * n_k)`` samples of
    client k (at most ``n_k - 1``, so every client keeps one training sample) go to validation.

    Returns:
        (train partition, validation partition), both with sorted indices.
    """
    if not 0 <= fraction < 1:
        raise BenchError(f"val_fraction must be in [0, 1), got {fraction}")
    train, val = [], []
    for ix, rng in zip(partition.client_indices, rngs, strict=True):
        n_val = min(int(np.floor(fraction * len(ix))), max(len(ix) - 1, 0))
        order = rng.permutation(len(ix))
        val.append(np.sort(ix[order[:n_val]]))
        train.append(np.sort(ix[order[n_val:]]))
    return Partition(tuple(train)), Partition(tuple(val))


def partition_record(
    partition: Partition, labels: np.ndarray, num_classes: int, val: Partition | None = None
) -> dict:
    """A JSON-ready record of a partition: per-client indices and class counts, and fingerprints."""
    counts = partition.class_counts(labels, num_classes)
    record: dict = {
        "fingerprint": partition.fingerprint(),
        "num_samples": int(len(labels)),
        "clients": [
            {"indices": ix.tolist(), "class_counts": c.tolist()}
            for ix, c in zip(partition.client_indices, counts, strict=True)
        ],
    }
    if val is not None:
        record["val_fingerprint"] = val.fingerprint()
        for client, ix in zip(record["clients"], val.client_indices, strict=True):
            client["val_indices"] = ix.tolist()
    return record


class DamagedPartition(BenchError):
    """A partition record that is malformed or does not match its own fingerprint."""


def read_partition_file(path: Path, labels: np.ndarray, num_classes: int) -> tuple[Partition, Partition | None] | None:
    """The verified partition saved at ``path``, or None when the file is damaged (then set aside with a
    warning: the partition is redrawn, identically, from its seed). A partition drawn on other data is
    an error, not damage."""
    from livar_bench.store import DamagedFile, read_json, set_aside

    where = f"partition file {path}"
    try:
        record = read_json(path, lambda data: isinstance(data, dict))
        return partition_from_record(record, labels, num_classes, where=where)
    except (DamagedFile, DamagedPartition) as err:
        reason = str(err).split(";")[0].removeprefix(where).strip(" :").removeprefix("is damaged:").removeprefix("is ").strip() if isinstance(err, DamagedPartition) else str(err)
        set_aside(path, reason, "the partition is redrawn from its seed")
        return None


def partition_from_record(
    record: dict, labels: np.ndarray, num_classes: int, where: str = "partition file"
) -> tuple[Partition, Partition | None]:
    """Rebuild (partition, validation partition or None) from ``partition_record`` output, verified.

    Raises:
        BenchError: the record is damaged (fingerprint mismatch) or was drawn on other data (sample
            count or per-client class counts differ from ``labels``).
    """
    redo = f"delete {where} to redraw the partition, or write results to another --out folder"
    try:
        clients = record["clients"]
        part = Partition(tuple(np.asarray(c["indices"], dtype=np.int64) for c in clients))
        val = None
        if "val_fingerprint" in record:
            val = Partition(tuple(np.asarray(c["val_indices"], dtype=np.int64) for c in clients))
        stored_counts = np.asarray([c["class_counts"] for c in clients], dtype=np.int64)
        fingerprint, num_samples = record["fingerprint"], record["num_samples"]
    except (KeyError, TypeError, ValueError) as err:
        raise DamagedPartition(f"{where} is malformed ({err!r}); {redo}") from None
    if part.fingerprint() != fingerprint or (val is not None and val.fingerprint() != record["val_fingerprint"]):
        raise DamagedPartition(f"{where} is damaged: its indices do not match its fingerprint; {redo}")
    every = np.concatenate([*part.client_indices, *(val.client_indices if val else ())])
    if num_samples != len(labels) or (every.size and (every.min() < 0 or every.max() >= len(labels))):
        raise BenchError(
            f"{where} was drawn on a training set of {num_samples} samples, but the dataset now has "
            f"{len(labels)}; {redo}"
        )
    if not np.array_equal(part.class_counts(labels, num_classes), stored_counts):
        raise BenchError(f"{where} does not match the current dataset's labels (class counts differ); {redo}")
    return part, val
