"""The round loop: the one place where model, device, data and method meet.

    partition (seeded) -> initial trainable tensors (seeded) -> for each round: for each sampled client:
    local_train -> ClientUpdate; method.server_step -> evaluate -> tidy metric rows -> checkpoint

Every random stream is derived from (seed, purpose, round, client), never from global RNG state, so:
- all methods of one (dataset, alpha, seed) see the same partition, initial weights and client data
  order (paired comparisons);
- a run interrupted after round r resumes from its checkpoint and gives the same numbers.

On CPU two runs of one spec give identical metrics; on GPU atomics in some CUDA kernels make them agree
only closely (docs/determinism.md says what is and is not reproducible, and how to opt into
``torch.use_deterministic_algorithms``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from livar_bench import interrupt
from livar_bench.client.phase import add_deltas, base_deltas_applied
from livar_bench.client.train import evaluate
from livar_bench.config import RunSpec
from livar_bench.data import DatasetBundle
from livar_bench.device import peak_memory, reset_peak_memory
from livar_bench.federation.kernel import (
    Engine,
    Event,
    check_finite,
    client_diagnostics,
    local_settings,
    sample_clients,
    system_rows,
)
from livar_bench.federation.local_engine import local_engine
from livar_bench.federation.round1_cache import Round1Cache, shared_cost
from livar_bench.federation.run_folder import (
    RunFolder,
    final_metrics,
    nonfinite_total,
    partition_record,
    tidy_rows,
    with_heterogeneity,
)
from livar_bench.federation.setup import HeldOutData, Setup, data_provenance, setup_run
from livar_bench.methods.base import Method
from livar_bench.models.identity import provenance
from livar_bench.seeding import (
    STREAM_INIT,
    generator,
)
from livar_bench.store import LeaseLost, RunStore, environment
from livar_bench.types import ClientUpdate, ServerState, Signal


class Launcher(Protocol):
    """Runs the round loop of another engine: ``launch`` calls ``body(engine=...)`` (``_run_locked`` with
    the run's arguments bound) where that engine lives, e.g. inside a Flower ServerApp."""

    def launch(self, spec: RunSpec, body: Callable[..., RunOutcome]) -> RunOutcome: ...


@dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    final: dict[str, float]
    skipped: bool = False


def run_federation(
    spec: RunSpec,
    out: str | Path,
    *,
    on_event: Event | None = None,
    bundle: DatasetBundle | None = None,
    force: bool = False,
    share_round1: bool = False,
    round1_signals: frozenset[Signal] | None = None,
    launcher: Launcher | None = None,
) -> RunOutcome:
    """Run one federated experiment and store it under ``<out>/runs/<run_id>``.

    ``launcher``: None runs the round loop here with the local engine; another engine (Flower,
    ``livar_bench/flower/engine.py``) runs the same loop with its own per-round step. The engine is not
    part of the run id: both compute the same experiment (env.json records which ran).

    With ``share_round1`` (sweeps), round-1 client updates are read from / written to
    ``<out>/cache/round1`` and shared by every method of the cell with the same client objective;
    ``round1_signals`` are the signals to collect when computing them (default: the cheap ones plus the
    method's), e.g. the union of the sweep's methods' requirements (federation/round1_cache.py).

    A run that is already DONE is skipped (unless ``force``); one whose lock another live process holds
    is skipped too. An interrupted run resumes from its last completed round.
    """
    emit = on_event or (lambda *a, **k: None)
    store = RunStore(out)
    run_id = spec.run_id
    if store.is_done(run_id) and not force:
        return RunOutcome(run_id, store.run_dir(run_id), final_metrics(store.metrics(run_id)), skipped=True)
    with store.lock(run_id) as held:
        if not held:
            emit("locked", run_id=run_id)
            return RunOutcome(run_id, store.run_dir(run_id), {}, skipped=True)
        if store.is_done(run_id) and not force:  # another process finished it between our check and the lock
            return RunOutcome(run_id, store.run_dir(run_id), final_metrics(store.metrics(run_id)), skipped=True)
        if force:  # start afresh, but keep the finished run until the new one replaces it at commit
            store.discard(run_id, keep_checkpoint=False)
        try:
            body = functools.partial(_run_locked, spec, store, emit, bundle, (share_round1, round1_signals),
                                     replace=force)
            return body() if launcher is None else launcher.launch(spec, body)
        except BaseException as err:
            # lease mode: this process stalled past its lease and another one took the run over (and may have
            # finished it, removing the partial folder we were writing to): leave the run to it, touch nothing
            if isinstance(err, LeaseLost) or (isinstance(err, OSError) and not store.holds(run_id)):
                emit("warning", run_id=run_id, message=f"run {run_id}: another process took this run over while "
                     "this one stalled past its lease; left to that process")
                return RunOutcome(run_id, store.run_dir(run_id), {}, skipped=True)
            store.discard(run_id)  # keeps a partial run that has a checkpoint, so a rerun resumes it
            raise


def _run_locked(spec: RunSpec, store: RunStore, emit: Event, bundle: DatasetBundle | None,
                share: tuple[bool, frozenset[Signal] | None] = (False, None), replace: bool = False,
                engine: Engine | None = None) -> RunOutcome:
    run_id = spec.run_id
    method = spec.method_spec.build()
    s = setup_run(spec, bundle, partitions_dir=store.root / "partitions")
    round1 = Round1Cache.for_run(store.root, spec, method, s.device) if share[0] and engine is None else None
    engine = engine or local_engine(round1, share[1])
    reset_peak_memory(s.device)
    folder = RunFolder(store, run_id)
    labels = s.bundle.train.labels.numpy()
    record = partition_record(spec, s.partition, s.bundle.train, s.bundle.num_classes, s.bundle.domain_names)
    folder.write_records(spec, {**provenance(spec), **data_provenance(spec)},  # weights' sha256, input size, data
                         {**environment(str(s.device)), "engine": getattr(engine, "name", "local")}, record)
    folder.write_partition_plot(spec, record, s.bundle.class_names, store.root / "partitions")

    settings = local_settings(s)
    rows: list[dict[str, Any]] = []
    start_round = 1
    saved = folder.load_checkpoint(map_location=s.device)  # None: none yet, or damaged (set aside)
    if saved is not None:
        # Checkpoints before server state held only "params".
        state = ServerState.from_dict(saved["state"]) if "state" in saved else ServerState(saved["params"])
        rows = saved["rows"]
        start_round = saved["round"] + 1
        emit("resume", run_id=run_id, round=saved["round"])
    else:
        initial = s.model.initial_params(generator(spec.seed, STREAM_INIT))
        state = method.init_state({k: v.to(s.device) for k, v in initial.items()})
        rows += tidy_rows(spec, 0, "test", evaluate(s.model, state.params, s.test, s.eval_tf, spec.eval_batch_size, s.dtype))
        if s.val is not None:
            rows += tidy_rows(spec, 0, "val", evaluate(s.model, state.params, s.val, s.eval_tf, spec.eval_batch_size, s.dtype))
        if s.heldout is not None:
            rows += tidy_rows(spec, 0, "test_heldout", evaluate(s.model, state.params, s.heldout, s.eval_tf,
                                                                spec.eval_batch_size, s.dtype))
    server_data = HeldOutData(s) if s.val is not None else None
    if method.personalised and not spec.eval_local:
        emit("warning", message=f"{spec.method} is a personalised method: its global accuracy is not its intended "
                                "metric; add --eval-local for each client's own accuracy (split test_local)")
    train_round = engine(s, method, settings, emit, server_data)
    from livar_bench.methods.dp import privacy_report

    privacy = privacy_report(method, spec.num_clients, spec.participation, spec.rounds)  # calibrated at validation

    # history: the rows so far (round 0, or every round of the checkpoint), for consumers that mirror a run
    emit("start", run_id=run_id, spec=spec, rounds=spec.rounds, clients=spec.num_clients, start_round=start_round,
         history=list(rows))
    for round_ in range(start_round, spec.rounds + 1):
        interrupt.check()  # a Ctrl-C that landed in an ignored-exception context (interrupt.py)
        t0, first = time.perf_counter(), len(rows)
        done = train_round(state, round_)
        before, state, updates = state, done.state, done.updates
        check_finite(spec.method, round_, updates, state)  # before anything of this round is written
        t2 = time.perf_counter()
        evaluated = add_deltas(state.base_deltas, method.evaluation_deltas(state, updates, done.ctx))
        with base_deltas_applied(s.model, evaluated):
            metrics = evaluate(s.model, state.params, s.test, s.eval_tf, spec.eval_batch_size, s.dtype)
            if s.val is not None:
                rows += tidy_rows(spec, round_, "val", evaluate(s.model, state.params, s.val, s.eval_tf, spec.eval_batch_size, s.dtype))
            if s.heldout is not None:  # leave-domains-out: the domains no client trained on
                rows += tidy_rows(spec, round_, "test_heldout", evaluate(s.model, state.params, s.heldout, s.eval_tf,
                                                                         spec.eval_batch_size, s.dtype))
        if s.local_tests is not None:
            rows += tidy_rows(spec, round_, "test_local", _local_metrics(s, method, before, state, updates))
        t3 = time.perf_counter()
        rows += tidy_rows(spec, round_, "test", metrics)
        if privacy is not None:  # what the round's releases have spent so far (split privacy)
            rows += tidy_rows(spec, round_, "privacy", privacy[round_ - 1])
        losses = {"loss": float(np.mean(done.losses))} if done.losses else {}  # no replies: no training loss
        rows += tidy_rows(spec, round_, "train", {**losses, **client_diagnostics(updates, method.requires)})
        system, per_client = system_rows(done.plan, sample_clients(spec, round_), updates)
        for client, values in per_client.items():  # who replied and how many steps each took
            rows += [{**row, "client": client} for row in tidy_rows(spec, round_, "clients", values)]
        rows += tidy_rows(spec, round_, "cost", {
            "train_s": done.train_s, "aggregate_s": done.aggregate_s, "eval_s": t3 - t2,
            "train_images_per_s": done.images / max(done.train_s, 1e-9), "wall_s": t3 - t0,
            **done.costs, **system, "client_state_bytes": float(state.client_state_bytes()), **peak_memory(s.device),
            # a shared round 1: what it cost
            **(shared_cost(*done.shared, done.train_s, t3 - t0 - done.train_s) if done.shared else {}),
        })
        if not store.holds(run_id):  # lease mode: taken over while this process stalled
            raise LeaseLost(run_id)
        folder.save_checkpoint(round_, state.to_dict(), rows)
        emit("round", round=round_, metrics=metrics, rows=rows[first:])
    if not store.holds(run_id):
        raise LeaseLost(run_id)
    frame = with_heterogeneity(pd.DataFrame(rows), s.partition.class_counts(labels, s.bundle.num_classes))
    if "client" in frame.columns:  # rows of split "clients" name their client (whole numbers, empty elsewhere)
        frame["client"] = frame["client"].astype("Int64")
    folder.write_metrics(frame)
    bad = nonfinite_total(frame)
    if bad:
        emit("warning", run_id=run_id, message=f"run {run_id}: {bad} client step(s) had a non-finite LoRA signal "
             "contribution, which counted as zero (metric nonfinite_signal_steps in metrics.csv)")
    received = nonfinite_total(frame, "nonfinite_signals_received")
    if received:
        emit("warning", run_id=run_id, message=f"run {run_id}: {received} LoRA signal value(s) received from clients "
             "were not finite and counted as zero (metric nonfinite_signals_received in metrics.csv)")
    outcome = RunOutcome(run_id, folder.commit(replace=replace), final_metrics(frame))
    emit("done", run_id=run_id, final=outcome.final)
    return outcome


def _local_metrics(s: Setup, method: Method, before: ServerState, after: ServerState,
                   updates: list[ClientUpdate]) -> dict[str, float]:
    """Personalised evaluation: each client's own model (``Method.personal_params``; by default its locally
    trained tensors, under the base-weight corrections it trained with) on its own test subset. Mean
    accuracy and loss over clients, and the mean accuracy of the worst tenth of clients (at least one)."""
    accs, losses = [], []
    with base_deltas_applied(s.model, before.base_deltas):
        for u in updates:
            data = s.local_tests[u.client_id]
            if len(data) == 0:
                continue
            m = evaluate(s.model, method.personal_params(after, u), data, s.eval_tf, s.spec.eval_batch_size, s.dtype)
            accs.append(m["acc"])
            losses.append(m["loss"])
    worst = sorted(accs)[: max(1, int(np.ceil(0.1 * len(accs))))]
    return {"acc": float(np.mean(accs)), "acc_worst10": float(np.mean(worst)), "loss": float(np.mean(losses))}
