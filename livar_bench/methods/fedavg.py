"""FedAvg (McMahan et al., 2017, arXiv 1602.05629).

Every trainable tensor is replaced by the sample-count weighted mean of the clients' tensors. LoRA
factors A and B are averaged *separately*, as the LIVAR reference code does, so the merged update is
(sum_k w_k B_k)(sum_k w_k A_k), not sum_k w_k B_k A_k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from livar_bench.methods.base import Aggregator
from livar_bench.ops.weighted import sample_weights, weighted_average_params
from livar_bench.types import ClientUpdate, Params, RoundContext, Signal


@dataclass(frozen=True)
class FedAvg(Aggregator):
    """Sample-weighted mean of every trainable tensor (LoRA factors separately, head rows)."""

    requires: ClassVar[frozenset[Signal]] = frozenset()

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        weights = sample_weights([u.num_samples for u in updates])
        return weighted_average_params([u.params for u in updates], weights, keys=global_params)
