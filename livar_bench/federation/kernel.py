"""The round kernel both engines share: who takes part, the server's context, and the client phase of a round.

The local engine (``local_engine.py``) and the Flower ClientApp call ``train_round_clients`` for their
clients, so both engines compute the same experiment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from livar_bench.client.collectors import diagnostic_names
from livar_bench.client.costs import round_costs
from livar_bench.client.phase import train_clients
from livar_bench.client.system import ClientPlan, plan_round, replying  # noqa: F401  (re-exported)
from livar_bench.client.train import ClientResult, LocalSettings
from livar_bench.config import RunSpec
from livar_bench.errors import DivergedError
from livar_bench.federation.round1_cache import Round1Result
from livar_bench.federation.setup import Setup
from livar_bench.methods.base import Method
from livar_bench.seeding import (
    STREAM_SAMPLE,
    STREAM_SERVER,
    derive_seed,
    generator,
)
from livar_bench.types import ClientUpdate, ExtraRound, Params, RoundContext, ServerData, ServerState, Signal

# The event sink of a run: ``emit(kind, **details)`` (start, client, round, resume, warning, locked, done).
Event = Callable[..., None]


def sample_clients(spec: RunSpec, round_: int) -> list[int]:
    """Clients taking part in a round (all, or a seeded subset of size ceil(participation * K))."""
    k = spec.num_clients
    m = max(1, int(np.ceil(spec.participation * k)))
    if m >= k:
        return list(range(k))
    rng = np.random.default_rng(derive_seed(spec.seed, STREAM_SAMPLE, round_))
    return sorted(rng.choice(k, size=m, replace=False).tolist())


@dataclass
class TrainedRound:
    """One round's client phase and server step, as an engine reports it to the round loop."""

    state: ServerState  # after method.server_step
    updates: list[ClientUpdate]  # the replies the method saw
    ctx: RoundContext
    losses: list[float]
    images: int
    train_s: float
    aggregate_s: float
    costs: dict[str, float]  # cost rows of the round (communication, replies, engine extras)
    shared: tuple[Round1Result, bool] | None = None  # local engine, round 1 through the sweep's shared cache
    plan: dict[int, ClientPlan] | None = None  # system heterogeneity: each sampled client's round (round_plan)


RoundFn = Callable[[ServerState, int], TrainedRound]
# An engine: given the run's setup, method, local settings, event sink and server data, the function that
# trains and aggregates one round. ``name`` (an attribute) goes to env.json. None = the local engine.
Engine = Callable[["Setup", Method, LocalSettings, Event, ServerData | None], RoundFn]


def local_settings(s: Setup) -> LocalSettings:
    spec = s.spec
    return LocalSettings(spec.local_epochs, spec.batch_size, spec.lr, spec.weight_decay, s.dtype)


def round_context(s: Setup, round_: int, server_data: ServerData | None,
                  extra_round: Callable[[ExtraRound], list[ClientUpdate]] | None = None) -> RoundContext:
    """The server's context of a round (its random stream derives from the seed and the round);
    ``extra_round`` is the engine's way of running one extra client round when a stage asks for it."""
    return RoundContext(round=round_, num_rounds=s.spec.rounds, num_classes=s.bundle.num_classes,
                        lora_scale=s.model.scale, server_data=server_data,
                        generator=generator(s.spec.seed, STREAM_SERVER, round_, device=s.device),
                        extra_round=extra_round, num_clients=s.spec.num_clients,
                        participation=s.spec.participation, local_lr=s.spec.lr)


def round_plan(s: Setup, round_: int, clients: list[int]) -> dict[int, ClientPlan] | None:
    """System heterogeneity of a round (``client/system.py``): each sampled client's local steps and whether
    it replies; None when every client does its full work and replies (the run has none)."""
    spec = s.spec
    if not spec.system.active:
        return None
    return plan_round(spec.system, spec.seed, round_, {k: s.clients.size(k) for k in clients}, spec.local_epochs,
                      spec.batch_size)


def system_rows(plan: dict[int, ClientPlan] | None, sampled: list[int],
                updates: list[ClientUpdate]) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """(cost metrics of the round, {client: its metrics}) of who was sampled, replied and worked how much.

    Cost metrics (every run): ``clients_sampled``, ``clients_dropped`` (sampled, no reply), ``local_steps``
    (summed over the replies) and ``local_steps_mean``. Per client (runs with system heterogeneity, split
    ``clients``): ``replied`` 1/0, ``straggler`` 1/0, ``missed_deadline`` 1/0 and ``steps`` (taken, replies only).
    """
    steps = [u.num_steps or 0 for u in updates]
    costs = {"clients_sampled": float(len(sampled)), "clients_dropped": float(len(sampled) - len(updates)),
             "local_steps": float(sum(steps)), "local_steps_mean": float(np.mean(steps)) if steps else 0.0}
    if plan is None:
        return costs, {}
    taken = {u.client_id: u.num_steps for u in updates}
    per_client = {}
    for k in sampled:
        row = {"replied": float(k in taken), "straggler": float(plan[k].straggler),
               "missed_deadline": float(plan[k].reason == "deadline")}
        if k in taken:
            row["steps"] = float(taken[k] or 0)
        per_client[k] = row
    return costs, per_client


def method_costs(method: Method, state: ServerState, updates: list[ClientUpdate], round_: int) -> dict[str, float]:
    """The communication cost rows of a round (``client.costs.round_costs``) as the method's clients send and
    receive: the global tensors, base corrections and, per client, the tensors its objective reads (one
    client's, all having the same shapes) down; up, the tensors its ``client_side()`` says are uploaded."""
    side = method.client_side
    download = [state.params, state.base_deltas]
    if side.inputs is not None and updates:
        download.append(side.inputs(state, updates[0].client_id))
    keys = None if side.uploads_frozen else side.uploaded_keys(state.params, round_)
    return round_costs(updates, download, method.requires, keys, side.upload_copies)


def train_round_clients(s: Setup, method: Method, settings: LocalSettings, global_params: Params,
                        starts: dict[int, Params], round_: int, requires: frozenset[Signal],
                        on_client: Callable[[int, ClientResult], None] | None = None,
                        budgets: dict[int, int] | None = None,
                        inputs: dict[int, Params | None] | None = None) -> dict[int, ClientResult]:
    """Train the clients of ``starts`` (client id -> its start, ``Method.client_start``) for one round.

    What the local engine runs for the round's clients and a Flower ClientApp for its own client: clients
    grouped by LoRA rank, each group under its LoRA scale, the method's frozen keys of the round left
    unchanged; ``budgets``: client id -> its local steps this round (system heterogeneity; absent = full
    epochs); ``inputs``: client id -> the tensors its objective reads (``Method.client_inputs``).
    """
    spec = s.spec
    results = {}
    objectives = None if not inputs else {k: method.objective_for(inputs.get(k)) for k in starts}
    for rank, group in _rank_groups(spec, sorted(starts)):  # one group unless clients have different ranks
        scale = spec.client_lora_scale(rank)
        own = {k: with_rank(starts[k], rank) for k in group} if rank != spec.max_rank else \
            {k: starts[k] for k in group}
        personal = any(own[k] is not global_params for k in group)
        with s.model.scaled(scale):
            trained = train_clients(
                s.model, global_params, {k: s.clients[k] for k in group}, s.train_tf, method.objective, settings,
                seed=spec.seed, round_=round_, num_classes=s.bundle.num_classes, requires=requires, pack=spec.pack,
                on_client=on_client, starts=own if personal else None,
                frozen=method.frozen_keys(list(global_params), round_), budgets=budgets,
                objectives=None if objectives is None else {k: objectives[k] for k in group})
        for k, r in trained.items():  # with mixed ranks, each update says its client's scale
            results[k] = dataclasses.replace(r, update=dataclasses.replace(r.update, lora_scale=scale)) \
                if spec.mixed_ranks else r
    return dict(sorted(results.items()))


def _rank_groups(spec: RunSpec, clients: list[int]) -> list[tuple[int, list[int]]]:
    """The round's clients grouped by LoRA rank (packing only ever packs clients of one rank)."""
    groups: dict[int, list[int]] = {}
    for k in clients:
        groups.setdefault(spec.client_rank(k), []).append(k)
    return sorted(groups.items())


def with_rank(params: Params, rank: int) -> Params:
    """``params`` with LoRA rank components beyond ``rank`` set to zero (rows of A, columns of B).

    A client of rank r_k < r trains on the shared rank-r model with the extra components zero: their
    gradients are then exactly zero (each multiplies the other's zeros), so they stay zero and the client
    trains a rank-r_k adapter.
    """
    out = dict(params)
    for key, value in params.items():
        if key.endswith(".lora_A") and value.shape[0] > rank:
            out[key] = torch.cat([value[:rank], torch.zeros_like(value[rank:])])
        elif key.endswith(".lora_B") and value.shape[1] > rank:
            out[key] = torch.cat([value[:, :rank], torch.zeros_like(value[:, rank:])], dim=1)
    return out


def client_diagnostics(updates: list[ClientUpdate], requires: frozenset[Signal]) -> dict[str, float]:
    """Each diagnostic the method's collectors report (e.g. ``nonfinite_signal_steps``), summed over the
    round's clients."""
    return {name: float(sum(u.diagnostics.get(name, 0.0) for u in updates)) for name in diagnostic_names(requires)}


def check_finite(method_name: str, round_: int, updates: list[ClientUpdate], state: ServerState) -> None:
    """Fail the round when the new global model (trainable tensors or base-weight corrections) is not finite.

    Evaluating it would only report chance accuracy, and every later round would train on it. The message
    says whose fault it is: a client whose trained tensors are already not finite (its training diverged with
    a finite loss), or else the server step itself (a step size such as ``fedavgm[eta=1e308]``).

    Raises:
        DivergedError: when any tensor of ``state.params`` or ``state.base_deltas`` holds a NaN or an inf.
    """
    bad = [k for k, v in {**state.params, **state.base_deltas}.items() if not bool(torch.isfinite(v).all())]
    if not bad:
        return
    what = f"round {round_}: the new global model is not finite ({len(bad)} tensor(s), e.g. {bad[0]})"
    clients = [u.client_id for u in updates if any(not bool(torch.isfinite(t).all()) for t in u.params.values())]
    if clients:
        raise DivergedError(f"{what}: the trained tensors of client(s) {', '.join(map(str, clients))} are not "
                            "finite although their loss is; lower --lr or check the data")
    raise DivergedError(f"{what}: the server step of {method_name} made it so from finite client updates; lower "
                        "the method's step size (e.g. eta, server_lr, lam) and run again")
