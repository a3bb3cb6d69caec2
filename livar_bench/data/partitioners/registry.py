"""The partitioner registry: one line per scheme (explicit, so ``ls partitioners`` lists them in order)."""

from __future__ import annotations

import difflib

from livar_bench.data.partitioners.base import Partitioner
from livar_bench.data.partitioners.label import BalancedDirichlet, Dirichlet, Iid, Quantity
from livar_bench.data.partitioners.natural import Domain
from livar_bench.data.partitioners.pathological import Classes, Shards
from livar_bench.errors import BenchError

PARTITIONERS: dict[str, type[Partitioner]] = {
    cls.name: cls for cls in (Dirichlet, Iid, BalancedDirichlet, Quantity, Shards, Classes, Domain)
}
ALIASES = {"natural_id": "domain", "pathological": "classes", "shard": "shards"}


def get_partitioner(name: str) -> type[Partitioner]:
    """The partitioner class registered as ``name`` (or an alias), or a ``BenchError`` listing them."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in PARTITIONERS:
        return PARTITIONERS[key]
    close = difflib.get_close_matches(key, [*PARTITIONERS, *ALIASES], n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise BenchError(f"unknown partition {name!r}.{hint} Known: {', '.join(PARTITIONERS)} "
                     f"(livar-bench ls partitioners)")
