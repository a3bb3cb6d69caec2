"""How heterogeneous a partition is: label skew, quantity skew and (when the data has them) domain skew."""

from __future__ import annotations

import numpy as np

# name -> what it means (printed by `livar-bench partition`, recorded in partition.json)
MEANINGS = {
    "clients": "number of clients",
    "assigned": "training samples held by some client",
    "unassigned": "training samples no client holds (classes[...] with classes nobody was given)",
    "size_min": "smallest client",
    "size_max": "largest client",
    "size_mean": "mean client size",
    "size_cv": "coefficient of variation of client sizes (0 = equal sizes)",
    "tv_distance": "mean total-variation distance of a client's label mix to the pooled one (0 = IID)",
    "class_coverage": "mean fraction of the classes a client holds at least one sample of",
    "classes_per_client": "mean number of classes a client holds",
    "effective_classes": "mean exp(entropy) of a client's label mix (C for uniform, 1 for one class)",
    "domains_per_client": "mean number of domains a client holds samples of",
    "domain_tv_distance": "mean total-variation distance of a client's domain mix to the pooled one",
}


def heterogeneity(counts: np.ndarray) -> dict[str, float]:
    """Measured skew of a partition's [K, C] class counts (the two columns metrics.csv carries).

    - ``tv_distance``: mean over clients of the total-variation distance between the client's label
      distribution and the global one (0 = IID, toward 1 = disjoint).
    - ``class_coverage``: mean fraction of classes a client holds at least one sample of.
    """
    counts = np.asarray(counts, dtype=np.float64)
    global_dist = counts.sum(0) / counts.sum()
    client_dist = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    tv = 0.5 * np.abs(client_dist - global_dist).sum(1)
    coverage = (counts > 0).mean(1)
    return {"tv_distance": float(tv.mean()), "class_coverage": float(coverage.mean())}


def _mix_tv(counts: np.ndarray) -> float:
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    return float((0.5 * np.abs(share - counts.sum(0) / counts.sum()).sum(1)).mean())


def measures(counts: np.ndarray, num_samples: int, domain_counts: np.ndarray | None = None) -> dict[str, float]:
    """Every measure of ``MEANINGS`` that applies: from [K, C] class counts, the training-set size and,
    for data with domains, [K, D] domain counts."""
    counts = np.asarray(counts, dtype=np.float64)
    sizes = counts.sum(1)
    share = counts / np.maximum(sizes[:, None], 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(share > 0, share * np.log(share), 0.0), axis=1)
    out = {
        "clients": float(len(sizes)),
        "assigned": float(sizes.sum()),
        "unassigned": float(num_samples - sizes.sum()),
        "size_min": float(sizes.min()),
        "size_max": float(sizes.max()),
        "size_mean": float(sizes.mean()),
        "size_cv": float(sizes.std() / sizes.mean()) if sizes.mean() > 0 else 0.0,
        **heterogeneity(counts),
        "classes_per_client": float((counts > 0).sum(1).mean()),
        "effective_classes": float(np.exp(entropy).mean()),
    }
    if domain_counts is not None:
        domain_counts = np.asarray(domain_counts, dtype=np.float64)
        out["domains_per_client"] = float((domain_counts > 0).sum(1).mean())
        out["domain_tv_distance"] = _mix_tv(domain_counts)
    return out
