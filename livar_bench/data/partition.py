"""Client partitions: Dirichlet label skew (the LIVAR reference procedure) and IID.

Every source of randomness is an explicit ``numpy.random.Generator``; the federation loop derives it
from the run seed alone, so every method of a (dataset, alpha, seed) cell sees the same partition.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

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
            f"training samples, but the dataset has {num_samples}; use fewer clients or a smaller minimum"
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
