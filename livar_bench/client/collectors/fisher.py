"""Fisher merging's statistic (``Signal.FISHER``): the diagonal Fisher information of every trainable
tensor (LoRA A, B and the head) of the client's final local model.

Estimated after training on ``FISHER_EXAMPLES`` of the client's training images, one backward pass each,
labels sampled from the model's own predictive distribution with the client's generator
(``client.signals.diagonal_fisher``), so the estimate is reproducible and a resumed round draws the same.
Sent: one float32 tensor per trainable tensor, as many bytes as the params themselves (the upload doubles).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, ClassVar

from livar_bench.client.collectors.base import ClientEnd, Collector
from livar_bench.client.signals import diagonal_fisher
from livar_bench.types import Signal

# FusionBench's smallest suggested count is 256; at 64 per-example backward passes per client and round the
# CPU study stays affordable (the estimate's noise is what the study measures against its cost).
FISHER_EXAMPLES = 64


class FisherDiag(Collector):
    """{trainable key: diagonal Fisher [*shape]} of the client's final model."""

    name: ClassVar[str] = Signal.FISHER.value
    serves: ClassVar[frozenset[Signal]] = frozenset({Signal.FISHER})

    def payload(self, state: Any, index: int, end: ClientEnd, requires: Collection[Signal]) -> Any:
        model, data, transform, settings = end.final_model()
        return diagonal_fisher(model, data.images, transform, FISHER_EXAMPLES, end.generator,
                               settings.autocast_dtype)

    def nbytes(self, payload: Any, requires: Collection[Signal]) -> int:
        return sum(t.numel() * t.element_size() for t in payload.values())
