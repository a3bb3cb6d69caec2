"""The run's partition: drawn from the run's seed, saved once per partition id and reused, verified.

The partition is saved once per partition id under ``<out>/partitions/`` and reused, verified, by later
runs (``obtain_partition``), so every method of a (dataset, alpha, seed) cell trains on exactly the same
client data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from livar_bench.config import RunSpec
from livar_bench.data.partition import (
    Partition,
    carve_validation,
    partition_record,
    read_partition_file,
)
from livar_bench.data.partitioners import PartitionData
from livar_bench.seeding import (
    STREAM_PARTITION,
    STREAM_VAL,
    derive_seed,
)
from livar_bench.store import write_json


def make_partition(spec: RunSpec, labels: np.ndarray, domains: np.ndarray | None = None) -> Partition:
    """The run's partition (``spec.partition_spec``, data/partitioners/), drawn from the seed's own stream."""
    rng = np.random.default_rng(derive_seed(spec.seed, STREAM_PARTITION))
    data = PartitionData(labels, domains, spec.dataset)
    return spec.partition_spec.draw(data, spec.num_clients, rng, spec.min_client_samples)


def obtain_partition(
    spec: RunSpec, labels: np.ndarray, num_classes: int, partitions_dir: Path | None = None,
    domains: np.ndarray | None = None,
) -> tuple[Partition, Partition | None]:
    """The run's (full partition, validation carve or None), saved once per partition id and reused.

    With ``partitions_dir`` the partition is read from ``<partitions_dir>/<partition_id>.json`` when
    that file exists (verified against its fingerprint and the current labels, so a changed dataset is
    refused rather than silently re-paired) and written there atomically otherwise. Every run of a
    results folder with the same partition id therefore trains on exactly the same client data.
    """
    path = partitions_dir / f"{spec.partition_id}.json" if partitions_dir is not None else None
    stored = read_partition_file(path, labels, num_classes) if path is not None and path.is_file() else None
    if stored is not None:  # None: no file yet, or a damaged one (set aside, redrawn identically below)
        return stored
    partition = make_partition(spec, labels, domains)
    val = None
    if spec.val_fraction > 0:
        rngs = [np.random.default_rng(derive_seed(spec.seed, STREAM_VAL, k)) for k in range(spec.num_clients)]
        _, val = carve_validation(partition, spec.val_fraction, rngs)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        record = partition_record(partition, labels, num_classes, val)
        record.update(partition_id=spec.partition_id, settings=spec.partition_settings())
        write_json(path, record)  # atomic; concurrent writers write identical content
    return partition, val
