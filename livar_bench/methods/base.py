"""The method contract: aggregators, stages and their composition into a ``Method``.

A method sees plain data only: dictionaries of the trainable tensors (LoRA factors and the classifier
head), the server state it owns and, where it asks for them, per-client statistics. It never sees an
``nn.Module``, a loader or a file, so that every method runs through the same federation loop (or the
Flower engine) and is testable on tiny tensors.

Interfaces are classes with every optional hook and class attribute declared here, with a default that
does nothing special. Both kinds share ``Component``: its description (``@describe``), the signals it
needs, its recipe version, its presets and the namespace of its buffers.

- ``Aggregator``: ``__call__(global_params, updates, ctx) -> params`` for a stateless merge (FedAvg,
  TIES, LIVAR), or ``server_step(state, updates, ctx) -> state`` for a method that keeps buffers
  across rounds (FedAvgM, FedAdam); ``client_side()`` for one that changes how clients train (their
  objective, the tensors they leave frozen or keep personal: FedProx, FFA-LoRA, FedSA-LoRA;
  ``methods/client_side.py``); ``accepts_mixed_ranks()`` for one that can merge clients of different
  LoRA ranks; ``evaluation_deltas`` for one that evaluates something other than what it sends;
  ``content_digest`` for one that reads a file (a LIVAR rule), so that the file's content is part of
  the run id.
- ``Stage``: runs after the aggregator; ``__call__(new_params, updates, ctx) -> params`` or, to see the
  previous global state too, ``apply(previous, new, updates, ctx) -> state``. ``before(state, updates,
  ctx, method)`` runs before the aggregator and may replace the updates it sees (the ``dp`` stage's
  clipping and noise). A stage that needs the clients once more (CCVR's statistics under the new global
  model) asks the engine for one extra client round through ``ctx.extra_round(ExtraRound(params, signals,
  base_deltas))``.
- ``secure_aggregation()``: whether the server needs only the (weighted) sum of the client updates
  ("sum": secure aggregation and central or distributed DP noise are possible) or each client's own
  contribution ("individual"), with the one-line reason; ``Aggregator.secure_weight`` is the weight of a
  client in that sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from torch import Tensor

from livar_bench.client.objectives import CrossEntropy, LocalObjective  # noqa: F401  (CrossEntropy: re-exported)
from livar_bench.methods.buffers import Buffers, ClientBuffers
from livar_bench.methods.client_side import ClientSide
from livar_bench.methods.describe import Description
from livar_bench.types import (  # noqa: F401  (ClassStats, needs_class_stats: re-exported for older imports)
    ClassStats,
    ClientUpdate,
    Params,
    RoundContext,
    ServerState,
    Signal,
    needs_class_stats,
)


class Slot(NamedTuple):
    """Where a component sits in a spec: the name it was written under, its position, its namespace.

    ``namespace`` prefixes its buffers: the name itself for its first occurrence in a spec (the keys of
    checkpoints written before a name could occur twice), ``name#k`` for its k-th.
    """

    name: str
    position: int
    namespace: str


class Component:
    """What aggregators and stages share (subclass ``Aggregator`` or ``Stage``, never this)."""

    description: ClassVar[Description | None] = None  # set by @describe
    requires: ClassVar[frozenset[Signal]] = frozenset()  # client signals it needs
    # Fewest client replies a round needs; an engine whose clients can fail stops the run below it.
    min_replies: ClassVar[int] = 1
    # Bumped when the resolved behaviour of existing specs of this component changes: part of the run id
    # (``MethodSpec.recipe_versions``), so those specs get new ids while every other method keeps its own.
    recipe: ClassVar[int | None] = None
    # Fields that choose a set of defaults for the others (CCVR's ``preset``): a setting equal to the
    # chosen preset's value is dropped from the canonical spec, as a default is.
    preset_fields: ClassVar[tuple[str, ...]] = ()
    last: ClassVar[bool] = False  # must be the last part of a spec (``dp``)

    def content_digest(self) -> str | None:
        """Digest of files the component reads (part of the run id); None when it reads none."""
        return None

    def secure_aggregation(self) -> tuple[str, str]:
        """("sum", what the server computes) when the server needs only the weighted mean of the client
        updates (with the weights of ``Aggregator.secure_weight``), else ("individual", why it needs each
        client's contribution). Individual unless a component declares otherwise."""
        return "individual", "its server step reads each client's update"

    @property
    def slot(self) -> Slot:
        """Where this instance sits in its spec (set by ``MethodSpec`` when it builds it; an instance built
        directly sits first, under the name its class is described with)."""
        bound = self.__dict__.get("_slot")
        if bound is not None:
            return bound
        name = self.description.name if self.description is not None else type(self).__name__.lower()
        return Slot(name, 0, name)

    @property
    def namespace(self) -> str:
        """Prefix of this component's keys in ``ServerState.buffers`` (see ``Slot``)."""
        return self.slot.namespace

    def buffers(self, state: ServerState) -> Buffers:
        """This component's view of ``state.buffers`` (a copy to write into; see ``methods/buffers.py``)."""
        return Buffers(self.namespace, state.buffers)

    def client_buffers(self, state: ServerState) -> ClientBuffers:
        """This component's view of ``state.client_state``: per-client tensors, kept in host memory."""
        return ClientBuffers(self.namespace, state.client_state)


def bind(component: Component, slot: Slot) -> Component:
    """Tell ``component`` where it sits in its spec (not a hyperparameter: equality and repr ignore it)."""
    object.__setattr__(component, "_slot", slot)  # frozen dataclass: set once, right after building
    return component


class Aggregator(Component):
    """Server-side merge of client updates (decorate it with ``@describe``; fields = hyperparameters).

    Contract (checked over every registered method by tests/methods/test_contract.py): the output has
    the keys, shapes and dtypes of the global params; inputs are not mutated; client order does not
    matter; results are deterministic given ``ctx.generator``; a resumed run continues exactly.
    """

    # its server step changes ServerState.base_deltas (FedEx-LoRA, FLoRA, LIVAR-Exact): the global model is then
    # more than its trainable tensors, and a stage that bounds the update must see the base corrections too
    moves_base_weights: ClassVar[bool] = False
    # it keeps server optimiser state (momentum, moments) fed by the round's unclipped step (FedOpt, FedAvgM,
    # FedAMS): a stage that rescales the step afterwards leaves that state out of step with the model
    server_moments: ClassVar[bool] = False

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        """The new global params (stateless methods implement this)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither __call__ nor server_step")

    def server_step(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext) -> ServerState:
        """The new server state; by default the state with ``params`` replaced by ``self(params, ...)``.

        A stateful method overrides this and keeps its buffers in ``state.buffers`` (never on ``self``),
        so that they are checkpointed and a resumed run is exact.
        """
        return state.evolve(params=self(state.params, updates, ctx))

    def client_side(self) -> ClientSide:
        """How clients train under this method: their objective, the tensors they leave frozen and those
        each keeps for itself (``ClientSide``); by default cross-entropy, nothing frozen or personal."""
        return ClientSide()

    def accepts_mixed_ranks(self) -> bool:
        """Whether clients may have different LoRA ranks (``--client-ranks``): only methods that never add
        factors of different clients entry by entry (FLoRA, product-space merges)."""
        return False

    def evaluation_deltas(self, state: ServerState, updates: Sequence[ClientUpdate],
                          ctx: RoundContext) -> dict[str, Tensor] | None:
        """Evaluation-only dense corrections to the frozen base weights (module path -> [out, in]).

        None (the default) evaluates exactly what clients receive.
        """
        return None

    def secure_weight(self, update: ClientUpdate) -> float:
        """A client's weight in the mean a sum-only server step needs (its sample count by default)."""
        return float(update.num_samples)


class Stage(Component):
    """A server step after aggregation (e.g. CCVR head calibration); decorate it with ``@describe``."""

    def before(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext,
               method: Method) -> tuple[ServerState, list[ClientUpdate]]:
        """(state, updates) the aggregator works from (both unchanged by default; ``dp`` privatises them)."""
        return state, list(updates)

    def secure_aggregation(self) -> tuple[str, str]:
        return "sum", "works on the aggregate only"

    def check(self, method: Method) -> None:
        """Raise ``ValueError`` (one line, what to do) when this stage cannot be part of ``method``."""

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        """The new params from the aggregated ones (stages that need only the new global implement this)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither __call__ nor apply")

    def apply(self, previous: ServerState, new: ServerState, updates: Sequence[ClientUpdate],
              ctx: RoundContext) -> ServerState:
        """The state after this stage, given the state before aggregation (``previous``) and after it."""
        return new.evolve(params=self(new.params, updates, ctx))


@dataclass(frozen=True)
class Method:
    """A full method: the server aggregator and the post-aggregation stages, in order; how its clients
    train is the aggregator's ``client_side()``."""

    spec: str
    aggregator: Aggregator
    stages: tuple[Stage, ...] = ()

    @property
    def client_side(self) -> ClientSide:
        """How its clients train (the aggregator's declaration)."""
        return self.aggregator.client_side()

    @property
    def objective(self) -> LocalObjective:
        """The loss clients train with."""
        return self.client_side.objective

    @property
    def personalised(self) -> bool:
        """Whether its intended metric is per-client accuracy (``--eval-local``): its clients keep tensors
        of their own."""
        return bool(self.client_side.personal)

    @property
    def requires(self) -> frozenset[Signal]:
        needed = set(self.aggregator.requires)
        for stage in self.stages:
            needed |= stage.requires
        return frozenset(needed)

    @property
    def min_replies(self) -> int:
        """Fewest client replies a round needs (the largest of its components' ``min_replies``)."""
        return max([self.aggregator.min_replies, *(stage.min_replies for stage in self.stages)])

    def init_state(self, params: Params) -> ServerState:
        """The server state before round 1: the initial params, no buffers, no base corrections."""
        return ServerState(params=dict(params))

    def server_step(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext) -> ServerState:
        """Aggregate, then apply each stage; every stage sees the state from before aggregation too.

        Updates are put in client-id order first, so that floating-point sums do not depend on the
        order in which clients finished.
        """
        updates = sorted(updates, key=lambda u: u.client_id)
        for stage in self.stages:
            state, updates = stage.before(state, updates, ctx, self)
        new = self.aggregator.server_step(state, updates, ctx)
        new = self.client_side.keep_personal(new, updates, self.aggregator.namespace)
        for stage in self.stages:
            new = stage.apply(state, new, updates, ctx)
        return new

    @property
    def secure_aggregation(self) -> tuple[str, str]:
        """("sum", ...) when every component needs only the sum of the updates, else the first
        component's ("individual", reason) that does not, the reason naming it."""
        for component in (self.aggregator, *self.stages):
            kind, reason = component.secure_aggregation()
            if kind != "sum":
                return kind, f"{component.slot.name}: {reason}"
        return "sum", self.aggregator.secure_aggregation()[1]

    def aggregate(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        """``server_step`` from a bare params dict (no buffers): the new params. For tests and tools."""
        return self.server_step(self.init_state(global_params), updates, ctx).params

    def evaluation_deltas(self, state: ServerState, updates: Sequence[ClientUpdate],
                          ctx: RoundContext) -> dict[str, Tensor] | None:
        return self.aggregator.evaluation_deltas(state, updates, ctx)

    def frozen_keys(self, keys: Sequence[str], round_: int | None = None) -> frozenset[str]:
        """The keys of ``keys`` that clients leave unchanged in round ``round_`` (``ClientSide.frozen_keys``;
        the round is needed only by methods that alternate)."""
        return self.client_side.frozen_keys(keys, round_)

    def client_start(self, state: ServerState, client_id: int) -> Params:
        """What client ``client_id`` starts local training from (``ClientSide.start``)."""
        return self.client_side.start(state, client_id, self.aggregator.namespace)

    def client_inputs(self, state: ServerState, client_id: int) -> Params | None:
        """The tensors client ``client_id`` receives for its objective with its start (``ClientSide.inputs``),
        on the device of the global tensors; None for a method that sends none."""
        side = self.client_side
        if side.inputs is None:
            return None
        return {k: t.to(state.params[k].device) if k in state.params else t
                for k, t in side.inputs(state, client_id).items()}

    def objective_for(self, inputs: Params | None) -> LocalObjective:
        """The objective of a client that received ``inputs`` (``client_inputs``)."""
        return self.client_side.objective_for(inputs)

    def personal_params(self, state: ServerState, update: ClientUpdate) -> Params:
        """A client's own model for ``--eval-local``, given the state after aggregation."""
        return self.client_side.personal_model(state, update)

    @property
    def objective_key(self) -> str:
        """What decides client training, from the declaration (``ClientSide.key``): round-1 client work is
        shared only between methods whose clients train alike."""
        return self.client_side.key

