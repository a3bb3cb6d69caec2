"""Partitioners: how the training set is dealt to clients, behind one registry and one spec grammar.

    --partition iid | "dirichlet[alpha=0.1]" | "shards[per_client=2]" | "classes[k=2]"
                | "quantity[dist=powerlaw,labels=dirichlet]" | "balanced_dirichlet" | domain

Every scheme is a pydantic model of its settings (``livar-bench ls partitioners`` lists them with their
help) whose ``draw(data, num_clients, rng, min_size)`` uses only the generator it is given; the round
loop derives that generator from the run seed (``federation.make_partition``), the partition is
fingerprinted by its index sets and identified by its settings (``RunSpec.partition_id``).
"""

from __future__ import annotations

from livar_bench.data.partitioners.base import (
    MAX_ATTEMPTS,
    Partition,
    PartitionData,
    Partitioner,
    build,
    check_clients,
    from_lists,
    from_owner,
    largest_remainder,
)
from livar_bench.data.partitioners.label import (
    BalancedDirichlet,
    Dirichlet,
    Iid,
    Quantity,
    dirichlet_partition,
    equal_sizes,
    iid_partition,
    inner_dirichlet,
)
from livar_bench.data.partitioners.natural import Domain
from livar_bench.data.partitioners.pathological import Classes, Shards
from livar_bench.data.partitioners.registry import ALIASES, PARTITIONERS, get_partitioner
from livar_bench.data.partitioners.spec import (
    describe,
    field_form,
    parse_partition,
    render,
    split_alpha,
    with_alpha,
)

__all__ = [
    "ALIASES", "MAX_ATTEMPTS", "PARTITIONERS", "BalancedDirichlet", "Classes", "Dirichlet", "Domain", "Iid",
    "Partition", "PartitionData", "Partitioner", "Quantity", "Shards", "build", "check_clients",
    "describe", "dirichlet_partition", "equal_sizes", "field_form", "from_lists", "from_owner", "get_partitioner",
    "iid_partition", "inner_dirichlet", "largest_remainder", "parse_partition", "render", "split_alpha",
    "with_alpha",
]
