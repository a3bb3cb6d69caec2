"""The in-process engine: every sampled client of a round trains here, one after another (or packed).
"""

from __future__ import annotations

import time

from livar_bench.client.extra_round import ExtraRoundPass
from livar_bench.client.phase import base_deltas_applied
from livar_bench.client.train import LocalSettings
from livar_bench.device import synchronize
from livar_bench.federation.kernel import (
    Engine,
    Event,
    RoundFn,
    TrainedRound,
    method_costs,
    replying,
    round_context,
    round_plan,
    sample_clients,
    train_round_clients,
)
from livar_bench.federation.round1_cache import Round1Cache, Round1Result
from livar_bench.federation.setup import Setup
from livar_bench.methods.base import Method
from livar_bench.types import ClientUpdate, ServerData, ServerState, Signal


def local_engine(round1: Round1Cache | None, round1_signals: frozenset[Signal] | None) -> Engine:
    """The in-process engine: every sampled client trains here, one after another (or packed)."""

    def engine(s: Setup, method: Method, settings: LocalSettings, emit: Event,
               server_data: ServerData | None) -> RoundFn:
        def train_round(state: ServerState, round_: int) -> TrainedRound:
            t0 = time.perf_counter()
            plan = round_plan(s, round_, sample_clients(s.spec, round_))
            with base_deltas_applied(s.model, state.base_deltas):
                updates, losses, images, shared = _client_phase(s, method, settings, state, round_, round1,
                                                                round1_signals, emit, plan)
            synchronize(s.device)
            t1 = time.perf_counter()
            comm = method_costs(method, state, updates, round_)
            # one extra client round, if a stage asks for it (the round's clients, the model it gives)
            extra = ExtraRoundPass(s.model, {u.client_id: s.clients[u.client_id] for u in updates}, s.eval_tf,
                                   s.bundle.num_classes, settings, seed=s.spec.seed, round_=round_)
            ctx = round_context(s, round_, server_data, extra)
            # nobody replied (every sampled client dropped out): the server has nothing to aggregate
            new = method.server_step(state, updates, ctx) if updates else state
            synchronize(s.device)
            t2 = time.perf_counter()
            comm = extra.add_costs(comm, len(updates))
            return TrainedRound(new, updates, ctx, losses, images, t1 - t0, t2 - t1 - extra.seconds,
                                {**comm, "clients_replied": float(len(updates))}, shared, plan)

        return train_round

    return engine


def _client_phase(s: Setup, method: Method, settings: LocalSettings, state: ServerState, round_: int,
                  round1: Round1Cache | None, round1_signals: frozenset[Signal] | None,
                  emit: Event, plan: dict | None = None
                  ) -> tuple[list[ClientUpdate], list[float], int, tuple[Round1Result, bool] | None]:
    """Local training of the round's clients: (updates, mean losses, images seen, (shared round-1 result,
    reused) when round 1 went through the shared cache).

    The one client phase (``client.phase.train_clients``); in round 1 of a sweep the updates may come
    from, or go to, the shared round-1 cache. ``plan`` (system heterogeneity): only the clients that will
    reply train, each for its own number of local steps.
    """
    spec, shared = s.spec, None
    (todo, budgets), requires, hit = replying(sample_clients(spec, round_), plan), method.requires, None
    if round1 is not None and round_ == 1:  # shared first round: reuse, or train with more signals
        hit = round1.load(method.requires)
        todo, requires = ([] if hit else todo), round1.signals_to_collect(method.requires, round1_signals)
    start = time.perf_counter()  # round-1 training time, stored in the shared cache
    starts = {k: method.client_start(state, k) for k in todo}
    inputs = {k: method.client_inputs(state, k) for k in todo}  # what each objective reads (None for most)
    results = train_round_clients(s, method, settings, state.params, starts, round_, requires,
                                  lambda k, r: emit("client", round=round_, client=k, loss=r.mean_loss), budgets,
                                  inputs if any(v is not None for v in inputs.values()) else None)
    updates = [r.update for r in results.values()]
    losses = [r.mean_loss for r in results.values()]
    images = sum(r.images for r in results.values())
    if round1 is not None and round_ == 1:
        synchronize(s.device)
        view = round1.settle(hit, Round1Result(updates, losses, images, requires, time.perf_counter() - start),
                             method.requires)
        shared = (view, hit is not None)
        updates, losses, images = list(view.updates), list(view.losses), view.images
        for u, loss in zip(updates, losses, strict=True) if hit else ():
            emit("client", round=round_, client=u.client_id, loss=loss)
    return updates, losses, images, shared
