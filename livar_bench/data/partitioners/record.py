"""What a run records about its partition: the ``partition.json`` summary and the label-distribution plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from livar_bench.data.partitioners.base import Partition, Partitioner
from livar_bench.data.partitioners.measures import heterogeneity, measures
from livar_bench.data.partitioners.spec import render


def domain_counts(partition: Partition, domains: np.ndarray | None, num_domains: int | None = None) -> np.ndarray | None:
    """[K, D] samples of each domain per client, or None for data without domains."""
    if domains is None:
        return None
    size = num_domains or (int(domains.max()) + 1 if len(domains) else 0)
    return np.stack([np.bincount(domains[ix], minlength=size) for ix in partition.client_indices])


def summary(part: Partitioner, partition: Partition, labels: np.ndarray, num_classes: int, *,
            partition_id: str, domains: np.ndarray | None = None,
            domain_names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The ``partition.json`` record of a run: scheme and settings, sizes, class (and domain) counts and
    every heterogeneity measure (``measures.MEANINGS``)."""
    counts = partition.class_counts(labels, num_classes)
    by_domain = domain_counts(partition, domains, len(domain_names) if domain_names else None)
    out: dict[str, Any] = {
        "partition_id": partition_id,
        "fingerprint": partition.fingerprint(),
        "scheme": part.name,
        "partition": render(part),
        "settings": part.model_dump(mode="json"),
        "alpha": getattr(part, "alpha", None) if part.uses_alpha() else None,
        "num_clients": partition.num_clients,
        "sizes": partition.sizes().tolist(),
        "class_counts": counts.tolist(),
        **heterogeneity(counts),
        "measures": measures(counts, len(labels), by_domain),
    }
    if by_domain is not None:
        out["domain_counts"] = by_domain.tolist()
        out["domain_names"] = list(domain_names) if domain_names else None
    return out


def save_plot(target: Path, shared: Path | None, counts: np.ndarray, title: str,
              class_names: tuple[str, ...] | None = None) -> Path:
    """Write the label-distribution plot to ``target``, drawing it once per partition: ``shared``
    (``<out>/partitions/<partition_id>.png``) is drawn when missing and copied otherwise."""
    from livar_bench.data.partitioners.plot import write_label_distribution
    from livar_bench.store import write_bytes

    if shared is None:
        return write_label_distribution(target, counts, title, class_names)
    if not shared.is_file():
        shared.parent.mkdir(parents=True, exist_ok=True)
        write_label_distribution(shared, counts, title, class_names)
    write_bytes(target, shared.read_bytes())
    return target
