"""Client signal collectors, one file per signal; this list is their registry.

To add a signal: add a value to ``types.Signal``, write a ``Collector`` subclass in its own file (see
lora_signal.py for a per-step signal, class_stats.py for one computed after training) and add it to
``COLLECTORS``. Sequential and packed training, the round-1 cache and the cost columns use it from here.
"""

from __future__ import annotations

from collections.abc import Collection

from livar_bench.client.collectors.base import ClientEnd, Collector
from livar_bench.client.collectors.class_stats import ClassStatsCollector
from livar_bench.client.collectors.fisher import FisherDiag
from livar_bench.client.collectors.input_gram import InputGram
from livar_bench.client.collectors.lora_signal import LoraSignal
from livar_bench.types import ClientUpdate, Signal

# End-of-client collectors run in this order; the statistics passes (RegMean, Fisher) load the client's
# final params themselves, before the class statistics read the features.
COLLECTORS: tuple[Collector, ...] = (LoraSignal(), InputGram(), FisherDiag(), ClassStatsCollector())


def collectors_for(requires: Collection[Signal]) -> list[Collector]:
    """The collectors whose signals ``requires`` asks for."""
    wanted = frozenset(requires)
    return [c for c in COLLECTORS if c.serves & wanted]


def restrict_update(update: ClientUpdate, requires: Collection[Signal]) -> ClientUpdate:
    """``update`` with only the signals ``requires`` asks for, as a client asked for those would send it."""
    import dataclasses

    by_name = {c.name: c for c in COLLECTORS}
    signals = {}
    for name, payload in update.signals.items():
        kept = by_name[name].restrict(payload, requires)
        if kept is not None:
            signals[name] = kept
    reported = {n for c in collectors_for(requires) for n in c.diagnostic_names}
    diagnostics = {k: v for k, v in update.diagnostics.items() if k in reported}
    return dataclasses.replace(update, signals=signals, diagnostics=diagnostics)


def diagnostic_names(requires: Collection[Signal]) -> tuple[str, ...]:
    """The diagnostics clients report for a method requiring ``requires`` (tidy ``train`` metrics)."""
    return tuple(n for c in collectors_for(requires) for n in c.diagnostic_names)


def signal_bytes(update: ClientUpdate, requires: Collection[Signal]) -> dict[str, int]:
    """Bytes of each signal payload the update carries for a method requiring ``requires``."""
    out = {}
    for collector in collectors_for(requires):
        payload = update.signals.get(collector.name)
        out[collector.name] = collector.nbytes(payload, requires) if payload is not None else 0
    return out


__all__ = ["COLLECTORS", "ClientEnd", "Collector", "collectors_for", "diagnostic_names", "restrict_update",
           "signal_bytes"]
