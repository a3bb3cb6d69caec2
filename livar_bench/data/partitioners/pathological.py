"""Pathological label skew: label-sorted shards (McMahan et al. 2017) and k classes per client.

Both first put the training set in the order of a seeded permutation, so which samples of a class a
client gets never depends on how the files happened to be listed (ImageNet-R's class folders list one
rendition after another: a contiguous cut would add a hidden domain skew).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from livar_bench.data.partitioners.base import Partition, PartitionData, Partitioner, from_lists
from livar_bench.errors import BenchError


class Shards(Partitioner):
    """Sort by label, cut into K * per_client shards, deal per_client random shards to each client.

    The pathological non-IID split of FedAvg (McMahan et al. 2017: 200 shards of 300 MNIST digits, two
    per client). In detail: the permuted training set is sorted by label (stable), cut into K * per_client
    shards of near-equal size (``np.array_split``: every sample is used), and ``rng.permutation(K *
    per_client)`` is dealt in consecutive groups of per_client. Flower Datasets'
    ``ShardPartitioner(num_shards_per_partition=per_client)`` gives the same index sets for the same
    generator (on the same permuted set) when K * per_client divides N; otherwise Flower cuts shards of
    floor(N / (K * per_client)) samples and drops the remainder, while here the remainder is spread.
    """

    name: ClassVar[str] = "shards"
    summary: ClassVar[str] = "sort by label, deal each client per_client shards (FedAvg's pathological split)"

    per_client: int = Field(2, ge=1, description="Shards dealt to each client.")

    def draw_once(self, data: PartitionData, num_clients: int, rng: np.random.Generator, min_size: int) -> Partition:
        shards = num_clients * self.per_client
        if shards > len(data):
            raise BenchError(f"partition shards[per_client={self.per_client}] over {num_clients} clients needs "
                             f"{shards} shards, more than the {len(data)} training samples; lower per_client or "
                             "--clients")
        order = rng.permutation(len(data))
        by_label = order[np.argsort(data.labels[order], kind="stable")]
        pieces = np.array_split(by_label, shards)
        deal = rng.permutation(shards)
        return from_lists([np.concatenate([pieces[s] for s in deal[k * self.per_client:(k + 1) * self.per_client]])
                           for k in range(num_clients)])


class Classes(Partitioner):
    """Each client holds k classes; a class's samples are split evenly among the clients holding it.

    Flower Datasets' ``PathologicalPartitioner(num_classes_per_partition=k, class_assignment_mode=assign)``
    (the same index sets for the same generator, on the same permuted set). ``assign``: ``first``
    (default; Flower's first-deterministic) gives client i class i mod C first and k - 1 random others, so
    every class is used once K >= C; ``random`` draws k distinct classes per client; ``deterministic``
    gives client i classes i, i+1, ..., i+k-1 (mod C) and ignores the seed for class choice. Samples of a
    class no client holds are left out of the federation (``partition.json`` counts them as unassigned).
    """

    name: ClassVar[str] = "classes"
    summary: ClassVar[str] = "each client holds k classes, split evenly among their holders (pathological)"
    redraw: ClassVar[bool] = True
    advice: ClassVar[str] = "raise k, use fewer --clients or a smaller --min-client-samples"

    k: int = Field(2, ge=1, description="Classes per client.")
    assign: Literal["first", "random", "deterministic"] = Field(
        "first", description="How classes are chosen: first (client i gets class i mod C, then random), random, "
                             "deterministic (classes i..i+k-1).")

    def attempts(self) -> int:
        fixed = self.assign == "deterministic" or (self.assign == "first" and self.k == 1)
        return 1 if fixed else 1000  # sizes follow from the class choice alone

    def choose(self, classes: list[int], num_clients: int, rng: np.random.Generator) -> list[list[int]]:
        """The classes of each client (Flower's three assignment modes)."""
        if self.k > len(classes):
            raise BenchError(f"partition classes[k={self.k}] gives each client {self.k} classes, but the training "
                             f"set has only {len(classes)}; lower k")
        held: list[list[int]] = []
        for i in range(num_clients):
            if self.assign == "random":
                held.append(rng.choice(classes, size=self.k, replace=False).tolist())
            elif self.assign == "deterministic":
                held.append([classes[(i + j) % len(classes)] for j in range(self.k)])
            else:
                mine = [classes[i % len(classes)]]
                while len(mine) < self.k:
                    c = rng.choice(classes, size=1)[0]
                    if c not in mine:
                        mine.append(c)
                held.append(mine)
        return held

    def draw_once(self, data: PartitionData, num_clients: int, rng: np.random.Generator, min_size: int) -> Partition:
        order = rng.permutation(len(data))
        labels = data.labels[order]
        classes = sorted(np.unique(labels).tolist())
        held = self.choose(classes, num_clients, rng)
        lists: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            holders = [i for i in range(num_clients) if c in held[i]]
            members = np.flatnonzero(labels == c)
            if len(holders) > len(members):
                raise BenchError(f"partition classes[k={self.k}]: class {c} is held by {len(holders)} clients but "
                                 f"has only {len(members)} training samples; lower k or --clients")
            for i, piece in zip(holders, np.array_split(members, len(holders)) if holders else (), strict=True):
                lists[i].append(order[piece])
        return from_lists([np.concatenate(parts) if parts else np.zeros(0, np.int64) for parts in lists])
