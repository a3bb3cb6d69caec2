"""Per-class feature statistics after local training (``Signal.CLASS_STATS``, ``Signal.CLASS_COV``).

Per class: count, mean, per-dimension variance over all samples and over the correctly classified ones
(LIVAR's head weights), and with ``CLASS_COV`` the full [C, D, D] covariances (CCVR). Computed once per
client from the features of its training data under its final local model. Sent: the two [C] int64
counts, the three [C, D] tensors and, with ``CLASS_COV``, the covariances.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any, ClassVar

from livar_bench.client.collectors.base import ClientEnd, Collector
from livar_bench.client.signals import class_statistics
from livar_bench.types import ClassStats, Signal


class ClassStatsCollector(Collector):
    """Class statistics of the client's training features (covariances only when CLASS_COV is asked)."""

    name: ClassVar[str] = Signal.CLASS_STATS.value
    serves: ClassVar[frozenset[Signal]] = frozenset({Signal.CLASS_STATS, Signal.CLASS_COV})

    def payload(self, state: Any, index: int, end: ClientEnd, requires: Collection[Signal]) -> ClassStats:
        feats, labels, correct = end.features()
        return class_statistics(feats, labels, correct, end.num_classes, Signal.CLASS_COV in requires)

    def nbytes(self, payload: ClassStats, requires: Collection[Signal]) -> int:
        sent = [payload.count, payload.count_correct, payload.mean, payload.var, payload.var_correct]
        if Signal.CLASS_COV in requires and payload.cov is not None:
            sent.append(payload.cov)
        return sum(t.numel() * t.element_size() for t in sent)

    def restrict(self, payload: ClassStats, requires: Collection[Signal]) -> ClassStats | None:
        requires = frozenset(requires)
        if not self.serves & requires:
            return None
        return payload if Signal.CLASS_COV in requires else dataclasses.replace(payload, cov=None)
