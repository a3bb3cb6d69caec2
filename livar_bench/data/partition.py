"""Client partitions: Dirichlet label skew (the LIVAR reference procedure) and IID.

Every source of randomness is an explicit ``numpy.random.Generator``; the federation loop derives it
from the run seed alone, so every method of a (dataset, alpha, seed) cell sees the same partition.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livar_bench.errors import BenchError

MAX_ATTEMPTS = 10_000


@dataclass(frozen=True)
class Partition:
    """Sorted training-sample indices of each client."""

    client_indices: tuple[np.ndarray, ...]

    @property
    def num_clients(self) -> int:
        return len(self.client_indices)

    def sizes(self) -> np.ndarray:
        return np.array([len(ix) for ix in self.client_indices], dtype=np.int64)

    def class_counts(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """[K, C] number of samples of each class per client."""
        return np.stack([np.bincount(labels[ix], minlength=num_classes) for ix in self.client_indices])

    def fingerprint(self) -> str:
        """Hash of the actual index sets (checks that two runs really used the same partition)."""
        h = hashlib.sha256()
        for ix in self.client_indices:
            h.update(np.asarray(ix, dtype=np.int64).tobytes())
            h.update(b"|")
        return h.hexdigest()[:12]


def _check(num_samples: int, num_clients: int, min_size: int) -> None:
    if num_clients < 1:
        raise BenchError("need at least one client")
    if num_clients * min_size > num_samples:
        raise BenchError(
            f"{num_clients} clients with at least {min_size} samples each need {num_clients * min_size} "
            f"training samples, but the dataset has {num_samples}; use fewer --clients or a smaller --min-client-samples"
        )


def dirichlet_partition(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator, min_size: int = 6
) -> Partition:
    """Label-skew partition: per class c, p_c ~ Dir(alpha * 1_K); each sample of c goes to client k w.p. p_c[k].

    Counts are therefore multinomial (not rounded shares). If any client ends with fewer than
    ``min_size`` samples the whole partition is redrawn, as in the reference implementation.
    """
    if alpha <= 0:
        raise BenchError(f"Dirichlet alpha must be positive, got {alpha}")
    labels = np.asarray(labels)
    _check(len(labels), num_clients, min_size)
    classes = np.unique(labels)
    for _ in range(MAX_ATTEMPTS):
        owner = np.empty(len(labels), dtype=np.int64)
        for c in classes:
            members = np.flatnonzero(labels == c)
            p = rng.dirichlet(np.full(num_clients, alpha))
            owner[members] = rng.choice(num_clients, size=len(members), p=p)
        sizes = np.bincount(owner, minlength=num_clients)
        if sizes.min() >= min_size:
            return Partition(tuple(np.flatnonzero(owner == k) for k in range(num_clients)))
    raise BenchError(
        f"could not draw a Dirichlet(alpha={alpha}) partition giving each of {num_clients} clients at least "
        f"{min_size} samples in {MAX_ATTEMPTS} attempts; raise alpha, lower --clients or --min-client-samples"
    )


def iid_partition(num_samples: int, num_clients: int, rng: np.random.Generator, min_size: int = 1) -> Partition:
    """Uniformly random split into near-equal shares."""
    _check(num_samples, num_clients, min_size)
    order = rng.permutation(num_samples)
    return Partition(tuple(np.sort(part) for part in np.array_split(order, num_clients)))


def heterogeneity(counts: np.ndarray) -> dict[str, float]:
    """Measured skew of a partition's [K, C] class counts.

    - ``tv_distance``: mean over clients of the total-variation distance between the client's label
      distribution and the global one (0 = IID, toward 1 = disjoint).
    - ``class_coverage``: mean fraction of classes a client holds at least one sample of.
    """
    counts = np.asarray(counts, dtype=np.float64)
    global_dist = counts.sum(0) / counts.sum()
    client_dist = counts / counts.sum(1, keepdims=True)
    tv = 0.5 * np.abs(client_dist - global_dist).sum(1)
    coverage = (counts > 0).mean(1)
    return {"tv_distance": float(tv.mean()), "class_coverage": float(coverage.mean())}


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
