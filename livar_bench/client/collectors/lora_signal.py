"""LIVAR's path-integral signal per LoRA factor (``Signal.LORA_SIGNAL``).

S_f = sum over steps |sum over entries of grad * (theta_before - theta_after)| for each LoRA factor f:
the Synaptic-Intelligence-style importance the LIVAR reference code accumulates. It stays on the device
(one [K, F] accumulator, foreach kernels per step) and is read once per round. One scalar per factor
is sent.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from livar_bench.client.collectors.base import ClientEnd, Collector
from livar_bench.types import Signal


class _State:
    def __init__(self, params: Mapping[str, Tensor]) -> None:
        self.keys = [k for k in params if ".lora_" in k]
        first = params[self.keys[0]]
        self.before = [torch.empty_like(params[k], dtype=params[k].dtype) for k in self.keys]
        self.total = torch.zeros(first.shape[0], len(self.keys), device=first.device, dtype=torch.float32)


class LoraSignal(Collector):
    """Accumulated |sum(grad * delta theta)| per LoRA factor, one 0-dim tensor per factor key."""

    name: ClassVar[str] = Signal.LORA_SIGNAL.value
    serves: ClassVar[frozenset[Signal]] = frozenset({Signal.LORA_SIGNAL})

    def start(self, params: Mapping[str, Tensor]) -> _State:
        return _State(params)

    @torch.no_grad()
    def before_step(self, state: _State, params: Mapping[str, Tensor]) -> None:
        torch._foreach_copy_(state.before, [params[k].detach() for k in state.keys])

    @torch.no_grad()
    def after_step(self, state: _State, params: Mapping[str, Tensor], grads: Mapping[str, Tensor],
                   active: Tensor | None) -> None:
        delta = torch._foreach_sub(state.before, [params[k].detach() for k in state.keys])
        prods = torch._foreach_mul([grads[k] for k in state.keys], delta)
        k = state.total.shape[0]
        step = torch.stack([t.reshape(k, -1).float().sum(1) for t in prods], 1).abs()  # [K, F]
        state.total.add_(step if active is None else step * active)

    def payload(self, state: _State, index: int, end: ClientEnd, requires: Collection[Signal]) -> Any:
        return dict(zip(state.keys, state.total[index].clone().unbind(0), strict=True))

    def nbytes(self, payload: Any, requires: Collection[Signal]) -> int:
        return sum(t.numel() * t.element_size() for t in payload.values())
