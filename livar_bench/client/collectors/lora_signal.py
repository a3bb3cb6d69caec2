"""LIVAR's path-integral signal per LoRA factor (``Signal.LORA_SIGNAL``).

S_f = sum over steps |sum over entries of grad * (theta_before - theta_after)| for each LoRA factor f:
the Synaptic-Intelligence-style importance the LIVAR reference code accumulates. It stays on the device
(one [K, F] accumulator, foreach kernels per step) and is read once per round. One scalar per factor
is sent.

A factor's step contribution that is not finite (a NaN or inf gradient or parameter) adds nothing, as
in the reference code (which replaces NaN by 0): one NaN would otherwise make every B threshold NaN
and all of LIVAR's module weights uniform, silently. The steps in which that happened for at least one
factor are counted per client (diagnostic ``nonfinite_signal_steps``).

A signal that reaches the server from outside (a Flower client of another implementation) may still be
non-finite: ``drop_nonfinite_received`` counts it as zero there too and counts the factors it dropped
(diagnostic ``nonfinite_signals_received``), and LIVAR's aggregator refuses a non-finite signal instead of
weighting every module uniformly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from livar_bench.client.collectors.base import ClientEnd, Collector
from livar_bench.types import ClientUpdate, Signal


class _State:
    def __init__(self, params: Mapping[str, Tensor]) -> None:
        self.keys = [k for k in params if ".lora_" in k]
        first = params[self.keys[0]]
        self.before = [torch.empty_like(params[k], dtype=params[k].dtype) for k in self.keys]
        self.total = torch.zeros(first.shape[0], len(self.keys), device=first.device, dtype=torch.float32)
        self.nonfinite = torch.zeros(first.shape[0], device=first.device, dtype=torch.int64)  # [K] steps


class LoraSignal(Collector):
    """Accumulated |sum(grad * delta theta)| per LoRA factor, one 0-dim tensor per factor key."""

    name: ClassVar[str] = Signal.LORA_SIGNAL.value
    serves: ClassVar[frozenset[Signal]] = frozenset({Signal.LORA_SIGNAL})
    # received: set by the server (drop_nonfinite_received), 0 from every client of this implementation
    diagnostic_names: ClassVar[tuple[str, ...]] = ("nonfinite_signal_steps", "nonfinite_signals_received")
    needs_training: ClassVar[bool] = True

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
        step = torch.stack([t.reshape(k, -1).float().sum(1) for t in prods], 1)  # [K, F]
        finite = torch.isfinite(step)
        step = torch.where(finite, step.abs(), torch.zeros_like(step))
        bad = (~finite).any(1)  # [K]
        if active is not None:
            step, bad = step * active, bad & (active[:, 0] > 0)
        state.total.add_(step)
        state.nonfinite.add_(bad)

    def payload(self, state: _State, index: int, end: ClientEnd, requires: Collection[Signal]) -> Any:
        return dict(zip(state.keys, state.total[index].clone().unbind(0), strict=True))

    def diagnostics(self, state: _State, index: int) -> dict[str, float]:
        return {"nonfinite_signal_steps": float(state.nonfinite[index])}  # one host read per client

    def nbytes(self, payload: Any, requires: Collection[Signal]) -> int:
        return sum(t.numel() * t.element_size() for t in payload.values())


def drop_nonfinite_received(update: ClientUpdate) -> ClientUpdate:
    """``update`` with each non-finite LoRA signal value set to 0 and their count added to its diagnostic
    ``nonfinite_signals_received`` (the update itself when every value is finite, or it sends none).

    The server's counterpart of the client's per-step drop, for signals it receives over the wire.
    """
    signals = update.signals.get(Signal.LORA_SIGNAL.value)
    if not signals:
        return update
    bad = [k for k, v in signals.items() if not bool(torch.isfinite(v).all())]
    if not bad:
        return update
    kept = {k: torch.where(torch.isfinite(v), v, torch.zeros_like(v)) if k in bad else v for k, v in signals.items()}
    diagnostics = {**update.diagnostics, "nonfinite_signals_received":
                   update.diagnostics.get("nonfinite_signals_received", 0.0) + len(bad)}
    return dataclasses.replace(update, signals={**update.signals, Signal.LORA_SIGNAL.value: kept},
                               diagnostics=diagnostics)
