"""What a method asks of its clients, declared as data: ``Aggregator.client_side() -> ClientSide``.

One declaration answers every client-facing question an engine has (the local round loop, the Flower
ClientApp and strategy, ``bench``, ``explain``, the round-1 cache):

- ``objective``: the loss clients train with (FedProx: cross-entropy + proximal term);
- ``frozen``: the kinds of trainable tensors clients leave unchanged (FFA-LoRA: every A);
- ``alternate``: kinds frozen by round, in a cycle (RoLoRA: A in odd rounds, B in even ones);
- ``inputs``: per-client tensors the server sends with the start for the objective (SCAFFOLD's c - c_i);
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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from livar_bench.client.objectives import CrossEntropy, LocalObjective, TakesInputs
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
    """How clients train under a method (the default: cross-entropy, nothing frozen, nothing personal).

    Attributes:
        objective: the client loss.
        frozen: kinds of tensors clients leave unchanged in every round.
        personal: kinds each client keeps for itself across rounds.
        alternate: kinds frozen by round, in a cycle, on top of ``frozen``: round r (1-based) also freezes
            ``alternate[(r - 1) % len(alternate)]`` (RoLoRA: ``({"A"}, {"B"})``, B trained in odd rounds).
        inputs: ``(state, client id) -> tensors`` the server sends a client with its start, which its
            objective reads (``objective.with_inputs``; SCAFFOLD's correction c - c_i); counted in the download.
        uploads_frozen: whether a client's upload counts the tensors it left frozen (False when the server
            holds them already, as RoLoRA's frozen factor; the cost columns then count the trained ones only).
        upload_copies: tensors of each uploaded parameter's size a client sends (SCAFFOLD: 2, the model
            and its control-variate update).
    """

    objective: LocalObjective = field(default_factory=CrossEntropy)
    frozen: frozenset[str] = frozenset()
    personal: frozenset[str] = frozenset()
    alternate: tuple[frozenset[str], ...] = ()
    inputs: Callable[[ServerState, int], Params] | None = None
    uploads_frozen: bool = True
    upload_copies: int = 1

    def __post_init__(self) -> None:
        for name, kinds in (("frozen", self.frozen), ("personal", self.personal),
                            *(("alternate", a) for a in self.alternate)):
            unknown = set(kinds) - set(KINDS)
            if unknown:
                raise ValueError(f"ClientSide.{name}: unknown tensor kinds {sorted(unknown)}; use {', '.join(KINDS)}")
        if self.inputs is not None and not isinstance(self.objective, TakesInputs):
            raise ValueError(f"ClientSide.inputs needs an objective with with_inputs(); "
                             f"{type(self.objective).__name__} has none")
        if self.upload_copies < 1:
            raise ValueError(f"ClientSide.upload_copies must be at least 1, got {self.upload_copies}")

    def frozen_kinds(self, round_: int | None = None) -> frozenset[str]:
        """The kinds clients leave unchanged in round ``round_`` (needed when ``alternate`` is set)."""
        if not self.alternate:
            return self.frozen
        if round_ is None:
            raise ValueError("this method freezes different tensors by round: pass the round")
        return self.frozen | self.alternate[(round_ - 1) % len(self.alternate)]

    def frozen_keys(self, keys: Iterable[str], round_: int | None = None) -> frozenset[str]:
        """The keys of ``keys`` that clients leave unchanged (in round ``round_``)."""
        kinds = self.frozen_kinds(round_)
        return frozenset(k for k in keys if kind_of(k) in kinds)

    def uploaded_keys(self, keys: Iterable[str], round_: int | None = None) -> list[str]:
        """The keys of ``keys`` a client's upload counts in round ``round_``."""
        keys = list(keys)
        if self.uploads_frozen:
            return keys
        frozen = self.frozen_keys(keys, round_)
        return [k for k in keys if k not in frozen]

    def objective_for(self, inputs: Params | None) -> LocalObjective:
        """The objective a client trains with, given the inputs the server sent it (None: the declared one)."""
        if inputs is None:
            return self.objective
        if not isinstance(self.objective, TakesInputs):
            raise ValueError(f"{type(self.objective).__name__} takes no inputs from the server")
        return self.objective.with_inputs(inputs)

    @property
    def key(self) -> str:
        """What decides how clients train, as text: the objective, and what is frozen or personal."""
        text = repr(self.objective)
        if self.frozen:
            text += "|frozen=" + ",".join(sorted(self.frozen))
        if self.personal:
            text += "|personal=" + ",".join(sorted(self.personal))
        if self.alternate:
            text += "|alternate=" + ";".join(",".join(sorted(a)) for a in self.alternate)
        if self.inputs is not None:
            text += "|inputs"
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
