"""The collector interface: one client signal, what it accumulates, what it sends, what that weighs.

Collectors see a client's trainable tensors *stacked*: each key maps to a tensor with a leading client
axis [K, *shape] (K = 1 in sequential training, the pack size in ``client/packed.py``), so one
collector serves both training paths. Per-step hooks must not synchronise the device.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from livar_bench.types import Signal


class ClientEnd(Protocol):
    """What an end-of-client collector may use once a client has finished training."""

    def features(self) -> tuple[Tensor, Tensor, Tensor]:
        """(features [N, D] float32, labels [N], correct [N] bool) of the client's training data under its
        final local model (computed once, on first use)."""
        ...

    @property
    def num_classes(self) -> int: ...

    @property
    def generator(self) -> torch.Generator:
        """The client's own random stream, after its local training (for collectors that sample)."""
        ...

    def final_model(self) -> tuple[Any, Any, Any, Any]:
        """(the shared model with the client's final params loaded, its training split, the transform, the
        local settings), for collectors that run their own passes over the client's data (RegMean's input
        Gram matrices, Fisher estimates). The base-weight corrections of the round are applied."""
        ...


class Collector:
    """One client signal. Subclass it, set ``name`` and ``serves``, override the hooks it needs.

    Attributes:
        name: key of the payload in ``ClientUpdate.signals``.
        serves: the ``Signal`` values that this collector's payload answers.
    """

    name: ClassVar[str] = ""
    serves: ClassVar[frozenset[Signal]] = frozenset()
    diagnostic_names: ClassVar[tuple[str, ...]] = ()  # what ``diagnostics`` reports
    # Whether the payload accumulates over training steps (then no extra client round can compute it,
    # ``types.ExtraRound``); end-of-client signals need only the client's data and a model.
    needs_training: ClassVar[bool] = False

    def start(self, params: Mapping[str, Tensor]) -> Any:
        """Per-pack accumulator state before the first step (None for end-of-client signals)."""
        return None

    def before_step(self, state: Any, params: Mapping[str, Tensor]) -> None:
        """Called after ``backward()`` and before the optimiser step."""

    def after_step(self, state: Any, params: Mapping[str, Tensor], grads: Mapping[str, Tensor],
                   active: Tensor | None) -> None:
        """Called after the optimiser step; ``active`` [K, 1] is 1 for clients that took the step."""

    def payload(self, state: Any, index: int, end: ClientEnd, requires: Collection[Signal]) -> Any:
        """What client ``index`` of the stack sends (may stay on the device)."""
        raise NotImplementedError

    def diagnostics(self, state: Any, index: int) -> dict[str, float]:
        """Client-side counters of client ``index`` for the tidy rows (not sent, not counted as bytes)."""
        return {}

    def nbytes(self, payload: Any, requires: Collection[Signal]) -> int:
        """Bytes of ``payload`` as sent for a method requiring ``requires``."""
        raise NotImplementedError

    def restrict(self, payload: Any, requires: Collection[Signal]) -> Any:
        """``payload`` as a client asked only for ``requires`` would have sent it (None: not sent)."""
        return payload if self.serves & frozenset(requires) else None
