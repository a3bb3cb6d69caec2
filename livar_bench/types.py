"""The contract types every layer imports: client updates, round context and server state.

This is the ground floor of the package: it imports only torch, so ``client/``, ``methods/``,
``federation`` and the optional Flower engine can all depend on it without depending on each other.

Parameter keys are canonical and short:
``blocks.3.attn.qkv.lora_A`` / ``blocks.3.attn.qkv.lora_B`` (LoRA factors A [r, in] and B [out, r]),
``head.weight`` [C, D] and ``head.bias`` [C].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
from torch import Tensor

Params = dict[str, Tensor]


class Signal(str, Enum):
    """Client-side statistics a method can ask for; clients compute only those requested.

    Each signal is produced by one collector (``livar_bench/client/collectors/``), which says what it
    accumulates, what it sends and what that weighs.
    """

    CLASS_STATS = "class_stats"  # per-class count, mean and per-dimension variance of pre-logit features
    CLASS_COV = "class_cov"  # additionally the full per-class covariance (CCVR)
    LORA_SIGNAL = "lora_signal"  # accumulated |sum(grad * delta theta)| per LoRA factor (LIVAR)
    INPUT_GRAM = "input_gram"  # per LoRA module (and the head) the Gram matrix X^T X of its inputs (RegMean)
    FISHER = "fisher"  # diagonal Fisher information of every trainable tensor (Fisher merging)


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
    """What one client sends to the server after local training.

    ``signals`` maps a collector's payload name to what it sent (``"class_stats"`` -> ``ClassStats``,
    ``"lora_signal"`` -> {factor key: 0-dim tensor}); only the signals the method asked for are present.
    """

    client_id: int
    num_samples: int
    class_counts: Tensor  # [C] int64
    params: Params
    signals: Mapping[str, Any] = field(default_factory=dict)
    lora_scale: float | None = None  # the client's LoRA scale alpha / r_k when ranks differ; None = ctx's
    # client-side counters reported in the tidy rows, not sent (e.g. "nonfinite_signal_steps")
    diagnostics: Mapping[str, float] = field(default_factory=dict)
    # local optimiser steps the client actually took (fewer than full epochs for a straggler); FedNova
    # normalises by it. None only for updates built outside local training (tests, old round-1 files).
    num_steps: int | None = None

    @property
    def class_stats(self) -> ClassStats | None:
        """The class statistics (``Signal.CLASS_STATS`` / ``CLASS_COV``), or None when not sent."""
        return self.signals.get(Signal.CLASS_STATS.value)

    @property
    def lora_signals(self) -> Mapping[str, Tensor] | None:
        """LoRA factor key -> scalar path-integral signal (``Signal.LORA_SIGNAL``), or None when not sent."""
        return self.signals.get(Signal.LORA_SIGNAL.value)


def client_scale(update: ClientUpdate, ctx: RoundContext) -> float:
    """The LoRA scale of ``update``'s client (its own with heterogeneous ranks, else the run's)."""
    return ctx.lora_scale if update.lora_scale is None else update.lora_scale


@dataclass(frozen=True)
class RoundContext:
    """What the server knows in a round besides the client updates.

    ``server_data``, when the run holds data on the server (see ``ServerData``), lets a stage compute
    features or losses of a candidate global model; None otherwise. ``extra_round``, set by the engine
    (both engines set it), runs one extra client round on request (``ExtraRound``): the round's clients
    return the asked signals under a given model, and the engine counts what that costs.
    """

    round: int
    num_rounds: int
    num_classes: int
    lora_scale: float
    generator: torch.Generator  # the server's random stream of the round (on the server's device)
    head_keys: tuple[str, str] = ("head.weight", "head.bias")
    server_data: Any = None
    extra_round: Callable[[ExtraRound], list[ClientUpdate]] | None = None
    # the federation's size and how a round samples it (the dp stage's accountant and noise shares)
    num_clients: int = 1
    participation: float = 1.0
    client_sampling: str = "uniform"
    local_lr: float | None = None  # the clients' learning rate (SCAFFOLD's option II divides by it)


@dataclass(frozen=True)
class ExtraRound:
    """A stage's request for one extra client round with a given model (no training).

    Every client that replied in the round loads ``params`` (with ``base_deltas`` added to the frozen base
    weights), runs its training data through the model and returns the ``signals`` asked for (signals
    computed after training, e.g. ``CLASS_STATS``, ``CLASS_COV``; not ``LORA_SIGNAL``, which needs training
    steps). CCVR's ``features=global`` is one: class statistics under the new global model.
    """

    params: Params
    signals: frozenset[Signal]
    base_deltas: Mapping[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerState:
    """Everything the server carries from one round to the next; checkpointed after every round.

    Attributes:
        params: the global trainable tensors (what clients receive at the start of a round).
        buffers: tensors owned by the method, keyed ``<component>.<name>`` (server momentum, second
            moments, control variates, per-client tensors, ...). Empty for stateless methods.
        base_deltas: dense corrections to the frozen base weights, LoRA module path -> [out, in]
            tensor (e.g. ``blocks.0.attn.qkv``). The federation adds them to the backbone's weights
            for training and evaluation, and clients download them.
        client_state: per-client tensors (a client's personal parameters, control variates), keyed
            ``<component>.<name>.<client>.<param>``, kept in host memory whatever the device: at
            cross-device scale they outnumber everything else, and a round touches only its clients'.
    """

    params: Params
    buffers: Mapping[str, Tensor] = field(default_factory=dict)
    base_deltas: Mapping[str, Tensor] = field(default_factory=dict)
    client_state: Mapping[str, Tensor] = field(default_factory=dict)

    def evolve(self, **changes: Any) -> ServerState:
        """A copy with ``changes`` applied (the state itself is never mutated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionaries of tensors, for ``torch.save`` (and ``from_dict`` on resume)."""
        return {"params": dict(self.params), "buffers": dict(self.buffers), "base_deltas": dict(self.base_deltas),
                "client_state": dict(self.client_state)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerState:
        host = {k: v.cpu() for k, v in data.get("client_state", {}).items()}  # wherever the checkpoint was mapped
        return cls(dict(data["params"]), dict(data.get("buffers", {})), dict(data.get("base_deltas", {})), host)

    def client_state_bytes(self) -> int:
        """Bytes of the per-client tensors (the figure ``bench-scale`` and the cost rows report)."""
        return sum(t.numel() * t.element_size() for t in self.client_state.values())


class ServerData:
    """Interface of the data a server holds (``RoundContext.server_data``), for stages that need it.

    The federation provides one when the run carves a validation split (``--val-fraction``); a stage
    that needs it and gets None should say so.
    """

    def features(self, params: Params) -> tuple[Tensor, Tensor]:
        """(pre-logit features [N, D] float32, labels [N]) of the server's data under ``params``."""
        raise NotImplementedError

    def loss(self, params: Params) -> float:
        """Mean cross-entropy of ``params`` on the server's data."""
        raise NotImplementedError
