"""The aggregator interface every method implements.

A method sees plain data only: dictionaries of the trainable tensors (LoRA factors and the classifier
head) and, where it asks for them, per-client statistics. It never sees an ``nn.Module``, a loader or a
file, so that every method runs through the same federation loop and is testable on tiny tensors.

Parameter keys are canonical and short:
``blocks.3.attn.qkv.lora_A`` / ``blocks.3.attn.qkv.lora_B`` (LoRA factors A [r, in] and B [out, r]),
``head.weight`` [C, D] and ``head.bias`` [C].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

Params = dict[str, Tensor]


class Signal(str, Enum):
    """Client-side statistics a method can ask for; clients compute only those requested."""

    CLASS_STATS = "class_stats"  # per-class count, mean and per-dimension variance of pre-logit features
    CLASS_COV = "class_cov"  # additionally the full per-class covariance (CCVR)
    LORA_SIGNAL = "lora_signal"  # accumulated |sum(grad * delta theta)| per LoRA factor (LIVAR)


def needs_class_stats(requires: Collection[Signal]) -> bool:
    """Whether clients must compute class statistics (CLASS_COV implies the plain statistics too)."""
    return Signal.CLASS_STATS in requires or Signal.CLASS_COV in requires


@dataclass(frozen=True)
class ClassStats:
    """Per-class statistics of a client's pre-logit features, computed after local training.

    ``*_correct`` fields use only the samples the client's final model classifies correctly (the LIVAR
    paper's definition); the others use every training sample of the class (the reference code's).
    Variances are unbiased per-dimension variances; rows with fewer than two samples are zero.
    """

    count: Tensor  # [C] int64
    mean: Tensor  # [C, D]
    var: Tensor  # [C, D]
    count_correct: Tensor  # [C] int64
    var_correct: Tensor  # [C, D]
    cov: Tensor | None = None  # [C, D, D], only when Signal.CLASS_COV is requested


@dataclass(frozen=True)
class ClientUpdate:
    """What one client sends to the server after local training."""

    client_id: int
    num_samples: int
    class_counts: Tensor  # [C] int64
    params: Params
    class_stats: ClassStats | None = None
    lora_signals: Mapping[str, Tensor] | None = None  # factor key -> scalar signal S (0-dim tensor)


@dataclass(frozen=True)
class RoundContext:
    """What the server knows in a round besides the client updates."""

    round: int
    num_rounds: int
    num_classes: int
    lora_scale: float
    generator: torch.Generator
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    head_keys: tuple[str, str] = ("head.weight", "head.bias")


@runtime_checkable
class Aggregator(Protocol):
    """Server-side merge: ``(global_params, updates, ctx) -> new global params``.

    Contract (checked over every registered method by tests/methods/test_contract.py): the output has
    the keys, shapes and dtypes of ``global_params``; inputs are not mutated; client order does not
    matter; results are deterministic given ``ctx.generator``.
    """

    requires: frozenset[Signal]

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params: ...


@runtime_checkable
class Stage(Protocol):
    """A post-aggregation server step (e.g. CCVR head calibration), same call shape as an aggregator."""

    requires: frozenset[Signal]

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params: ...


@runtime_checkable
class LocalObjective(Protocol):
    """The client loss. ``params`` are the live trainable tensors, ``anchor`` the round's global ones."""

    def __call__(self, logits: Tensor, targets: Tensor, params: Mapping[str, Tensor], anchor: Params) -> Tensor: ...


@dataclass(frozen=True)
class CrossEntropy:
    """Plain cross-entropy, the local objective of every method but FedProx."""

    def __call__(self, logits: Tensor, targets: Tensor, params: Mapping[str, Tensor], anchor: Params) -> Tensor:
        return torch.nn.functional.cross_entropy(logits.float(), targets)


@dataclass(frozen=True)
class Method:
    """A full method: client objective, server aggregator and post-aggregation stages, in order."""

    spec: str
    objective: LocalObjective
    aggregator: Aggregator
    stages: tuple[Stage, ...] = ()

    @property
    def requires(self) -> frozenset[Signal]:
        needed = set(self.aggregator.requires)
        for stage in self.stages:
            needed |= stage.requires
        return frozenset(needed)

    def server_step(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        """Aggregate, then apply each stage to the aggregate.

        Updates are put in client-id order first, so that floating-point sums do not depend on the
        order in which clients finished.
        """
        updates = sorted(updates, key=lambda u: u.client_id)
        new = self.aggregator(global_params, updates, ctx)
        for stage in self.stages:
            new = stage(new, updates, ctx)
        return new

    @property
    def objective_key(self) -> str:
        """Identifies the client objective, so round-1 client work can be shared between methods."""
        return repr(self.objective)


def hyperparameters(obj: object) -> dict[str, object]:
    """The dataclass fields of a method component (its hyperparameters)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
