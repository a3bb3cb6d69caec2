"""What a method asks of its clients, declared as data: ``Aggregator.client_side() -> ClientSide``.

One declaration answers every client-facing question an engine has (the local round loop, the Flower
ClientApp and strategy, ``bench``, ``explain``, the round-1 cache):

- ``objective``: the loss clients train with (FedProx: cross-entropy + proximal term);
- ``frozen``: the kinds of trainable tensors clients leave unchanged (FFA-LoRA: every A);
- ``personal``: the kinds each client keeps for itself across rounds (FedSA-LoRA: its B). A client
  starts each round from the global tensors with its own personal ones (the server keeps them for it in
  its per-client state, host memory, under the aggregator's namespace: ``<namespace>.B.<client>.<key>``
  in ``ServerState.client_state``); its personalised model for
  ``--eval-local`` is the global tensors with its personal ones, and a method that keeps nothing
  personal is evaluated on the client's own locally trained tensors.

Tensor kinds: ``"A"`` (``*.lora_A``), ``"B"`` (``*.lora_B``), ``"head"`` (every other trainable key).
Being data, the declaration also decides which methods train alike (``Method.objective_key``, round-1
sharing) without comparing functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from livar_bench.client.objectives import CrossEntropy, LocalObjective
from livar_bench.methods.buffers import Buffers, ClientBuffers
from livar_bench.types import ClientUpdate, Params, ServerState

KINDS = ("A", "B", "head")


def kind_of(key: str) -> str:
    """``"A"``, ``"B"`` or ``"head"`` for a trainable key (``blocks.0.attn.qkv.lora_A`` -> ``"A"``)."""
    if key.endswith(".lora_A"):
        return "A"
    if key.endswith(".lora_B"):
        return "B"
    return "head"


@dataclass(frozen=True)
class ClientSide:
    """How clients train under a method (the default: cross-entropy, nothing frozen, nothing personal)."""

    objective: LocalObjective = field(default_factory=CrossEntropy)
    frozen: frozenset[str] = frozenset()
    personal: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("frozen", "personal"):
            unknown = set(getattr(self, name)) - set(KINDS)
            if unknown:
                raise ValueError(f"ClientSide.{name}: unknown tensor kinds {sorted(unknown)}; use {', '.join(KINDS)}")

    def frozen_keys(self, keys: Iterable[str]) -> frozenset[str]:
        """The keys of ``keys`` that clients leave unchanged."""
        return frozenset(k for k in keys if kind_of(k) in self.frozen)

    @property
    def key(self) -> str:
        """What decides how clients train, as text: the objective, and what is frozen or personal."""
        text = repr(self.objective)
        if self.frozen:
            text += "|frozen=" + ",".join(sorted(self.frozen))
        if self.personal:
            text += "|personal=" + ",".join(sorted(self.personal))
        return text

    def start(self, state: ServerState, client_id: int, namespace: str) -> Params:
        """What client ``client_id`` starts local training from: the global tensors, with its own personal
        ones where it has any (``state.params`` itself when it has none), moved to the global tensors'
        device."""
        if not self.personal:
            return state.params
        clients = ClientBuffers(namespace, state.client_state)
        legacy = Buffers(namespace, state.buffers)  # checkpoints from before per-client state moved to the host
        own = {}
        for k in state.params:
            kind = kind_of(k)
            if kind in self.personal:
                t = clients.of(kind, client_id, [k]).get(k)
                t = legacy.get(f"{kind}.{client_id}", k) if t is None else t
                if t is not None:
                    own[k] = t.to(state.params[k].device)
        return {**state.params, **own} if own else state.params

    def keep_personal(self, state: ServerState, updates: Sequence[ClientUpdate], namespace: str) -> ServerState:
        """``state`` with each client's personal tensors from ``updates`` stored, as host copies in
        ``state.client_state``, for its next start."""
        if not self.personal:
            return state
        clients = ClientBuffers(namespace, state.client_state)
        for u in updates:
            for k, v in u.params.items():
                if kind_of(k) in self.personal:
                    clients.set(kind_of(k), u.client_id, k, v)  # a host copy
        return state.evolve(client_state=clients.mapping)

    def personal_model(self, state: ServerState, update: ClientUpdate) -> Params:
        """A client's own model for ``--eval-local``, given the state after aggregation."""
        if not self.personal:
            return update.params
        return {k: update.params[k] if kind_of(k) in self.personal else v for k, v in state.params.items()}
