"""Shared first round: round-1 client updates computed once per cell and reused by every method.

In a sweep, all methods of one cell (dataset, partition, backbone, LoRA, local settings, seed) start
round 1 from the same seeded global model, and every method whose clients train with the same local
objective (all but FedProx) gets exactly the same round-1 client updates. They only differ in which
signals the server asks for, and collecting a signal never changes training (signals are read, never
fed back). So round 1 is trained once, with the union of the signals, saved under
``<out>/cache/round1/<key>.pt``, and every later method reads it and drops the signals it did not ask
for: its updates are then bit-identical to recomputed ones (same tensors, saved and loaded exactly).

The file also holds the measured time of that round-1 training, so every run of the cell reports what
round 1 cost to compute (not the fraction of a second of reading it), marked ``round1_shared`` in its
cost rows (``shared_cost``). A file written before the time was stored counts as a miss and is rewritten.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from livar_bench.client.collectors import restrict_update
from livar_bench.client.packed import resolve_pack
from livar_bench.config import NON_IDENTITY_FIELDS, RunSpec
from livar_bench.digest import json_digest
from livar_bench.store import DamagedFile, load_tensors, save_tensors, set_aside
from livar_bench.types import Signal

CACHE_VERSION = 3  # 2: ClientUpdate carries a ``signals`` mapping (collectors); 3: timm head initialisation
# Spec fields that do not change round-1 client training (the method's server side, the run length).
NOT_IN_ROUND1 = frozenset({"method", "rounds"})
# Collected on a cache miss unless the caller says otherwise: cheap, and what LIVAR and CCVR's means need.
DEFAULT_SIGNALS = frozenset({Signal.LORA_SIGNAL, Signal.CLASS_STATS})


@dataclass(frozen=True)
class Round1Result:
    """The round-1 client work of one cell: updates (with ``signals`` collected), losses and images."""

    updates: list[Any]  # ClientUpdate
    losses: list[float]
    images: int
    signals: frozenset[Signal]
    train_s: float | None = None  # measured time of the round-1 client training (stored in the file)

    def restricted(self, requires: Collection[Signal]) -> Round1Result:
        """The same result with only the signals in ``requires``, as a run asking for them produces."""
        requires = frozenset(requires)
        return dataclasses.replace(self, updates=[restrict_update(u, requires) for u in self.updates], signals=requires)


def round1_key(spec: RunSpec, method: Any, device: torch.device) -> str:
    """Hash of everything that decides round-1 client updates (the objective and device included)."""
    skip = NON_IDENTITY_FIELDS | NOT_IN_ROUND1
    payload = {k: v for k, v in spec.model_dump(mode="json").items() if k not in skip}
    payload.update(spec.data_identity)  # a folder's content, not its path ({} for the named datasets)
    # The device type is part of the key: CPU and CUDA kernels do not give the same bits.
    # Packing changes rounding only, but a reused result must be bit-identical to a recomputed one.
    payload.update(objective=method.objective_key, device=device.type, version=CACHE_VERSION,
                   pack=resolve_pack(spec.pack, device, spec.num_clients))
    return json_digest(payload, 16)


class Round1Cache:
    """One cell's round-1 file: ``load`` what is there, ``save`` what was trained (atomically)."""

    def __init__(self, root: str | Path, key: str, device: torch.device) -> None:
        self.path = Path(root) / "cache" / "round1" / f"{key}.pt"
        self.device = device
        self._held: frozenset[Signal] | None = None  # signals in the file, as last read by ``load``

    @classmethod
    def for_run(cls, root: str | Path, spec: RunSpec, method: Any, device: torch.device) -> Round1Cache:
        return cls(root, round1_key(spec, method, device), device)

    def load(self, requires: Collection[Signal]) -> Round1Result | None:
        """The cached result restricted to ``requires``, or None when absent or short of a signal."""
        self._held = frozenset()
        if not self.path.is_file():
            return None
        try:
            state = load_tensors(self.path, map_location=self.device)  # digest-checked
            signals = frozenset(Signal(v) for v in state["signals"])
            if "train_s" not in state:  # written before the training time was stored: trained (and rewritten) again
                return None
            result = Round1Result(list(state["updates"]), list(state["losses"]), int(state["images"]), signals,
                                  float(state["train_s"]))
        except FileNotFoundError:
            return None  # removed meanwhile (the sweep releases a cell's file after its last run)
        except (DamagedFile, KeyError, TypeError, ValueError) as err:  # a damaged file costs a recomputation
            set_aside(self.path, str(err) if isinstance(err, DamagedFile) else "not a round-1 record",
                      "round 1 of its cell is recomputed")
            return None
        self._held = signals
        if not frozenset(requires) <= result.signals:
            return None
        return result.restricted(requires)

    def signals_to_collect(self, requires: Collection[Signal], extra: Collection[Signal] | None = None) -> frozenset[Signal]:
        """What a miss should collect: what is asked for, ``extra`` (default: the cheap signals) and
        whatever an existing file already holds, so that the rewritten file serves its earlier readers.
        The file's signals are those ``load`` saw (the file, which can be gigabytes, is read once)."""
        if self._held is None:
            self.load(())
        held = self._held or frozenset()
        return frozenset(requires) | frozenset(DEFAULT_SIGNALS if extra is None else extra) | held

    def save(self, result: Round1Result) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {"updates": result.updates, "losses": result.losses, "images": result.images,
                 "signals": sorted(s.value for s in result.signals), "train_s": result.train_s}
        save_tensors(self.path, state)  # atomic; concurrent writers of one cell write equivalent content

    def settle(self, hit: Round1Result | None, trained: Round1Result, requires: Collection[Signal]) -> Round1Result:
        """After the round-1 loop: save what was trained on a miss; the run's view either way."""
        if hit is not None:
            return hit
        self.save(trained)
        return trained.restricted(requires)


def shared_cost(view: Round1Result, reused: bool, measured_s: float, rest_s: float) -> dict[str, float]:
    """Round-1 cost rows of a run whose round 1 went through the shared cache: the time it took to compute
    (``view.train_s``, measured once by the run that trained it) instead of this run's ``measured_s``,
    and ``round1_shared`` = 1 when this run reused it, 0 when it computed it. ``rest_s``: aggregation and
    evaluation time, for ``wall_s``."""
    train_s = view.train_s if view.train_s is not None else measured_s
    return {"train_s": train_s, "train_images_per_s": view.images / max(train_s, 1e-9), "wall_s": train_s + rest_s,
            "round1_shared": float(reused)}
