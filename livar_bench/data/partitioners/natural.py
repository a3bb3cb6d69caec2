"""Natural-id partitions: clients defined by a property of the data (its domain), not drawn from labels.

Feature skew: each client sees one domain (or a few), e.g. ImageNet-R renditions or DomainNet's six
domains, while the label distribution stays what the domains have.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from livar_bench.data.partitioners.base import Partition, PartitionData, Partitioner, from_lists


class Domain(Partitioner):
    """Clients by domain: one or a few whole domains each, or one domain shared by several clients.

    With D domains (the ids present, sorted; in a seeded random order with ``shuffle=true``) and K clients:
    - K <= D: the domain list is cut into K consecutive groups (``np.array_split``: the first D mod K
      clients get one domain more) and client k holds every sample of group k. K == D is Flower Datasets'
      ``NaturalIdPartitioner`` (client k = k-th domain); D divisible by K is its
      ``GroupedNaturalIdPartitioner(group_size=D/K, mode="strict", sort_unique_ids=True)``.
    - K > D: client k works on domain (k mod D) of that list; the domain's samples, in a seeded random
      order, are split evenly (``np.array_split``) among its clients.
    Without ``shuffle`` and with K <= D the partition is fixed by the data: the seed changes nothing.
    """

    name: ClassVar[str] = "domain"
    summary: ClassVar[str] = "feature skew: each client holds one or a few whole domains (natural ids)"
    needs_domains: ClassVar[bool] = True
    advice: ClassVar[str] = "use fewer --clients (a domain's samples are split evenly) or a smaller --min-client-samples"

    shuffle: bool = Field(False, description="Deal the domains to clients in a seeded random order.")

    def draw_once(self, data: PartitionData, num_clients: int, rng: np.random.Generator, min_size: int) -> Partition:
        domains = np.asarray(data.domains)
        ids = np.unique(domains)
        if self.shuffle:
            ids = ids[rng.permutation(len(ids))]
        if num_clients <= len(ids):
            groups = np.array_split(ids, num_clients)
            return from_lists([np.flatnonzero(np.isin(domains, g)) for g in groups])
        lists: list[np.ndarray] = [np.zeros(0, np.int64)] * num_clients
        for d_pos, d in enumerate(ids):
            clients = list(range(d_pos, num_clients, len(ids)))
            members = np.flatnonzero(domains == d)
            members = members[rng.permutation(len(members))]
            for k, piece in zip(clients, np.array_split(members, len(clients)), strict=True):
                lists[k] = piece
        return from_lists(lists)
