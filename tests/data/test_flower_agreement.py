"""Agreement with Flower Datasets (``flwr-datasets``) where it has the same partitioner: the same index
sets for the same generator. Flower's partitioners take an int seed and call ``np.random.default_rng``
on it, which hands a ``Generator`` back unchanged, so both sides can share one stream exactly."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr_datasets")
datasets = pytest.importorskip("datasets")

from flwr_datasets import partitioner as fp  # noqa: E402

from livar_bench.data.partitioners import PartitionData, parse_partition  # noqa: E402

LABELS = np.random.default_rng(7).integers(0, 6, 240)  # 6 classes, unequal counts, shuffled order
DOMAINS = np.random.default_rng(8).integers(0, 6, 240)


def flower_sets(partitioner, order: np.ndarray | None = None, domains: np.ndarray | None = None) -> list[list[int]]:
    """Flower's partitions as sorted original indices (``order``: the row order Flower sees)."""
    order = np.arange(len(LABELS)) if order is None else order
    columns = {"label": LABELS[order].tolist(), "orig": order.tolist()}
    if domains is not None:
        columns["domain"] = domains[order].tolist()
    partitioner.dataset = datasets.Dataset.from_dict(columns)
    return [sorted(partitioner.load_partition(k)["orig"]) for k in range(partitioner.num_partitions)]


def ours(text: str, num_clients: int, seed: int, domains: np.ndarray | None = None) -> list[list[int]]:
    part = parse_partition(text).draw(PartitionData(LABELS, domains), num_clients, np.random.default_rng(seed))
    return [ix.tolist() for ix in part.client_indices]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iid_is_flowers_iid_partitioner_on_the_permuted_set(seed):
    rng = np.random.default_rng(seed)
    assert ours("iid", 7, seed) == flower_sets(fp.IidPartitioner(num_partitions=7), rng.permutation(len(LABELS)))


@pytest.mark.parametrize("balance", [False, True])
@pytest.mark.parametrize("seed", [0, 3])
def test_dirichlet_shares_is_flowers_dirichlet_partitioner(seed, balance):
    flower = fp.DirichletPartitioner(num_partitions=5, partition_by="label", alpha=0.7, min_partition_size=1,
                                     self_balancing=balance, seed=seed)
    text = "dirichlet[alpha=0.7,counts=shares" + (",balance=true]" if balance else "]")
    assert ours(text, 5, seed) == flower_sets(flower)


@pytest.mark.parametrize("seed", [0, 5])
def test_balanced_dirichlet_is_flowers_inner_dirichlet_with_equal_sizes(seed):
    flower = fp.InnerDirichletPartitioner(partition_sizes=[48] * 5, partition_by="label", alpha=0.4, seed=seed)
    assert ours("balanced_dirichlet[alpha=0.4]", 5, seed) == flower_sets(flower)


def _hamilton(total: int, weights: np.ndarray) -> list[int]:
    """Largest-remainder apportionment, written out here independently of the project's helper."""
    exact = [w / sum(weights) * total for w in weights]
    out = [int(np.floor(x)) for x in exact]
    by_remainder = sorted(range(len(out)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in by_remainder[: total - sum(out)]:
        out[i] += 1
    return out


@pytest.mark.parametrize("labels", ["iid", "dirichlet"])
def test_quantity_is_flowers_size_or_inner_dirichlet_partitioner_on_its_sizes(labels):
    rng = np.random.default_rng(11)
    sizes = [3 + s for s in _hamilton(len(LABELS) - 4 * 3, rng.lognormal(0.0, 1.0, 4))]  # minimum 3 each
    if labels == "iid":
        expected = flower_sets(fp.SizePartitioner(partition_sizes=sizes), rng.permutation(len(LABELS)))
    else:
        expected = flower_sets(fp.InnerDirichletPartitioner(partition_sizes=sizes, partition_by="label", alpha=0.5,
                                                            seed=rng))
    part = parse_partition(f"quantity[labels={labels}]").draw(PartitionData(LABELS), 4, np.random.default_rng(11),
                                                               min_size=3)
    assert [ix.tolist() for ix in part.client_indices] == expected


@pytest.mark.parametrize("seed", [0, 4])
def test_shards_is_flowers_shard_partitioner_when_shards_divide_the_set(seed):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(LABELS))
    flower = fp.ShardPartitioner(num_partitions=6, partition_by="label", num_shards_per_partition=2, seed=rng)
    assert ours("shards[per_client=2]", 6, seed) == flower_sets(flower, order)  # 240 = 6 * 2 * 20


@pytest.mark.parametrize(("assign", "flower_mode"), [("first", "first-deterministic"), ("random", "random"),
                                                     ("deterministic", "deterministic")])
def test_classes_is_flowers_pathological_partitioner(assign, flower_mode):
    rng = np.random.default_rng(9)
    order = rng.permutation(len(LABELS))
    flower = fp.PathologicalPartitioner(num_partitions=8, partition_by="label", num_classes_per_partition=2,
                                        class_assignment_mode=flower_mode, seed=rng)
    assert ours(f"classes[k=2,assign={assign}]", 8, 9) == flower_sets(flower, order)


def test_domain_is_flowers_natural_id_and_grouped_natural_id_partitioners():
    assert ours("domain", 6, 0, DOMAINS) == flower_sets(fp.NaturalIdPartitioner(partition_by="domain"),
                                                        domains=DOMAINS)
    grouped = fp.GroupedNaturalIdPartitioner(partition_by="domain", group_size=2, mode="strict", sort_unique_ids=True)
    assert ours("domain", 3, 0, DOMAINS) == flower_sets(grouped, domains=DOMAINS)
