"""RegMean's statistic (``Signal.INPUT_GRAM``): per LoRA-adapted layer and for the head, the Gram matrix
X^T X of the layer's inputs over the client's training data, under its final local model.

Computed after training by one extra forward pass (``client.signals.input_grams``). Sent: one [in, in]
float32 matrix per adapted layer plus the head's [D, D], counted in full (a deployment could send the upper
triangle, n (n + 1) / 2 entries, about half). For ViT-S/14 with LoRA on qkv, proj, fc1 and fc2 that is
12 x (3 x 384^2 + 1536^2) + 384^2 floats, about 135 MB per client and round: the price of RegMean.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, ClassVar

from livar_bench.client.collectors.base import ClientEnd, Collector
from livar_bench.client.signals import input_grams
from livar_bench.types import Signal

GRAM_BATCH = 64  # images per forward pass of the statistics pass


class InputGram(Collector):
    """{module path or "head": X^T X [in, in]} of the client's final model on its training data."""

    name: ClassVar[str] = Signal.INPUT_GRAM.value
    serves: ClassVar[frozenset[Signal]] = frozenset({Signal.INPUT_GRAM})

    def payload(self, state: Any, index: int, end: ClientEnd, requires: Collection[Signal]) -> Any:
        model, data, transform, settings = end.final_model()
        return input_grams(model, data.images, transform, GRAM_BATCH, settings.autocast_dtype)

    def nbytes(self, payload: Any, requires: Collection[Signal]) -> int:
        return sum(t.numel() * t.element_size() for t in payload.values())
