"""The round loop: the one place where model, device, data and method meet.

    partition (seeded) -> initial trainable tensors (seeded) -> for each round: for each sampled client:
    local_train -> ClientUpdate; method.server_step -> evaluate -> tidy metric rows -> checkpoint

Every random stream is derived from (seed, purpose, round, client), never from global RNG state, so:
- all methods of one (dataset, alpha, seed) see the same partition, initial weights and client data
  order (paired comparisons);
- a run interrupted after round r resumes from its checkpoint and gives the same numbers.

On CPU two runs of one spec give identical metrics; on GPU atomics in some CUDA kernels make them agree
only closely (docs/determinism.md says what is and is not reproducible, and how to opt into
``torch.use_deterministic_algorithms``). The partition is saved once per partition id under
``<out>/partitions/`` and reused, verified, by later runs (``obtain_partition``).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from livar_bench.backbones import provenance
from livar_bench.client.collectors import diagnostic_names
from livar_bench.client.global_stats import GlobalStatsPass
from livar_bench.client.phase import add_deltas, base_deltas_applied, train_clients
from livar_bench.client.round1_cache import Round1Cache, Round1Result, shared_cost
from livar_bench.client.train import ClientResult, LocalSettings, embed, evaluate
from livar_bench.config import RunSpec
from livar_bench.costs import peak_memory, reset_peak_memory, round_costs
from livar_bench.data import DatasetBundle, LoadOptions, load_dataset
from livar_bench.data.partition import (
    Partition,
    carve_validation,
    heterogeneity,
    partition_record,
    read_partition_file,
)
from livar_bench.data.partitioners import PartitionData
from livar_bench.data.partitioners import record as partition_files
from livar_bench.data.transforms import DeviceTransform
from livar_bench.errors import BenchError, WeightsError
from livar_bench.methods.base import Method
from livar_bench.models import build_model, weights_problem
from livar_bench.seeding import (  # noqa: F401  (STREAM_CLIENT: re-exported for older imports)
    STREAM_CLIENT,
    STREAM_INIT,
    STREAM_PARTITION,
    STREAM_SAMPLE,
    STREAM_SERVER,
    STREAM_VAL,
    derive_seed,
    generator,
)
from livar_bench.store import RunStore, environment, load_checkpoint, save_checkpoint, write_csv, write_json
from livar_bench.types import ClientUpdate, Params, RoundContext, ServerData, ServerState, Signal

Event = Callable[..., None]


class Launcher(Protocol):
    """Runs the round loop of another engine: ``launch`` calls ``body(engine=...)`` (``_run_locked`` with
    the run's arguments bound) where that engine lives, e.g. inside a Flower ServerApp."""

    def launch(self, spec: RunSpec, body: Callable[..., RunOutcome]) -> RunOutcome: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BenchError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return device


def autocast_dtype(spec: RunSpec, device: torch.device) -> torch.dtype | None:
    if spec.precision == "fp32" or (spec.precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def make_partition(spec: RunSpec, labels: np.ndarray, domains: np.ndarray | None = None) -> Partition:
    """The run's partition (``spec.partition_spec``, data/partitioners/), drawn from the seed's own stream."""
    rng = np.random.default_rng(derive_seed(spec.seed, STREAM_PARTITION))
    data = PartitionData(labels, domains, spec.dataset)
    return spec.partition_spec.draw(data, spec.num_clients, rng, spec.min_client_samples)


def obtain_partition(
    spec: RunSpec, labels: np.ndarray, num_classes: int, partitions_dir: Path | None = None,
    domains: np.ndarray | None = None,
) -> tuple[Partition, Partition | None]:
    """The run's (full partition, validation carve or None), saved once per partition id and reused.

    With ``partitions_dir`` the partition is read from ``<partitions_dir>/<partition_id>.json`` when
    that file exists (verified against its fingerprint and the current labels, so a changed dataset is
    refused rather than silently re-paired) and written there atomically otherwise. Every run of a
    results folder with the same partition id therefore trains on exactly the same client data.
    """
    path = partitions_dir / f"{spec.partition_id}.json" if partitions_dir is not None else None
    stored = read_partition_file(path, labels, num_classes) if path is not None and path.is_file() else None
    if stored is not None:  # None: no file yet, or a damaged one (set aside, redrawn identically below)
        return stored
    partition = make_partition(spec, labels, domains)
    val = None
    if spec.val_fraction > 0:
        rngs = [np.random.default_rng(derive_seed(spec.seed, STREAM_VAL, k)) for k in range(spec.num_clients)]
        _, val = carve_validation(partition, spec.val_fraction, rngs)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        record = partition_record(partition, labels, num_classes, val)
        record.update(partition_id=spec.partition_id, settings=spec.partition_settings())
        write_json(path, record)  # atomic; concurrent writers write identical content
    return partition, val


def record_partition(folder: Path, spec: RunSpec, s: Setup, partitions_dir: Path) -> None:
    """partition.json (scheme, settings, counts, heterogeneity) and partition.png (label distribution)."""
    split, names = s.bundle.train, s.bundle.domain_names
    labels, domains = split.labels.numpy(), None if split.domains is None else split.domains.numpy()
    record = partition_files.summary(spec.partition_spec, s.partition, labels, s.bundle.num_classes,
                                     partition_id=spec.partition_id, domains=domains, domain_names=names)
    write_json(folder / "partition.json", record)
    partition_files.save_plot(folder / "partition.png", partitions_dir / f"{spec.partition_id}.png",
                              np.asarray(record["class_counts"]), spec.partition_title, s.bundle.class_names)


def sample_clients(spec: RunSpec, round_: int) -> list[int]:
    """Clients taking part in a round (all, or a seeded subset of size ceil(participation * K))."""
    k = spec.num_clients
    m = max(1, int(np.ceil(spec.participation * k)))
    if m >= k:
        return list(range(k))
    rng = np.random.default_rng(derive_seed(spec.seed, STREAM_SAMPLE, round_))
    return sorted(rng.choice(k, size=m, replace=False).tolist())


@dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    final: dict[str, float]
    skipped: bool = False


@dataclass
class Setup:
    """Everything a run builds before its first round."""

    spec: RunSpec
    device: torch.device
    bundle: DatasetBundle
    model: Any
    train_tf: DeviceTransform
    eval_tf: DeviceTransform
    partition: Partition
    clients: list
    test: Any
    dtype: torch.dtype | None
    val: Any = None  # union of the clients' validation carves, or None when val_fraction == 0
    local_tests: dict[int, Any] | None = None  # client -> test subset with its label distribution (eval_local)


def load_run_dataset(spec: RunSpec) -> DatasetBundle:
    """The dataset a run trains on (decoded once into the cache; subsampled when the spec asks)."""
    options = LoadOptions(spec.data_root, spec.cache_dir, spec.download, storage_size=spec.image_size or 224)
    return load_dataset(spec.dataset, options, spec.max_train_samples, spec.max_test_samples)


def setup_run(spec: RunSpec, bundle: DatasetBundle | None = None, partitions_dir: Path | None = None) -> Setup:
    """Load data, build the shared model, draw (or reuse) the partition and move client data to the device."""
    device = resolve_device(spec.device)
    if bundle is None:
        problem = weights_problem(spec.backbone, pretrained=spec.pretrained, weights=spec.weights)
        if problem:  # before decoding a dataset, which can take minutes
            raise WeightsError(problem)
        bundle = load_run_dataset(spec)
    model, info = build_model(
        spec.backbone, bundle.num_classes, rank=spec.max_rank, alpha=spec.lora_alpha, targets=spec.lora_targets,
        pretrained=spec.pretrained, weights=spec.weights, image_size=spec.image_size,
    )
    model.check_rank()
    model.to(device)
    train_tf = DeviceTransform(info.input_size, info.mean, info.std, scale=bundle.crop_scale, eval_crop=bundle.eval_crop)
    labels = bundle.train.labels.numpy()
    domains = None if bundle.train.domains is None else bundle.train.domains.numpy()
    partition, val = obtain_partition(spec, labels, bundle.num_classes, partitions_dir, domains)
    train = bundle.train.to(device)
    client_ix = partition.client_indices
    if val is not None:  # clients train on what the validation carve leaves
        client_ix = tuple(np.setdiff1d(ix, v) for ix, v in zip(client_ix, val.client_indices, strict=True))
    clients = [train.subset(torch.from_numpy(ix).to(device)) for ix in client_ix]
    val_split = None
    if val is not None:
        val_split = train.subset(torch.from_numpy(np.sort(np.concatenate(val.client_indices))).to(device))
    local_tests = local_test_sets(spec, bundle.test, [c.labels.cpu() for c in clients], bundle.num_classes) \
        if spec.eval_local else None
    test = bundle.test.to(device)
    return Setup(spec, device, bundle, model, train_tf, train_tf, partition, clients, test,
                 autocast_dtype(spec, device), val_split,
                 {k: test.subset(ix.to(device)) for k, ix in local_tests.items()} if local_tests else None)


STREAM_EVAL_LOCAL = 6  # the per-client test subsets of eval_local
LOCAL_TEST_SIZE = 200  # images per client test subset (fewer when the test set is smaller)


def local_test_sets(spec: RunSpec, test: Any, client_labels: list[torch.Tensor], num_classes: int) -> dict[int, torch.Tensor]:
    """Per client, test indices drawn with the client's training label distribution (seeded by the run's
    seed and the client, so every method of a cell gets the same subsets): round(p_kc * M) images of class c,
    without replacement, M = min(LOCAL_TEST_SIZE, test size), capped at what the test set holds."""
    labels = test.labels.cpu().numpy()
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    size = min(LOCAL_TEST_SIZE, len(labels))
    out = {}
    for k, own in enumerate(client_labels):
        rng = np.random.default_rng(derive_seed(spec.seed, STREAM_EVAL_LOCAL, k))
        share = np.bincount(own.numpy(), minlength=num_classes) / max(len(own), 1)
        picks = [rng.choice(by_class[c], size=min(int(round(share[c] * size)), len(by_class[c])), replace=False)
                 for c in range(num_classes) if share[c] > 0]
        out[k] = torch.from_numpy(np.sort(np.concatenate(picks))) if picks else torch.zeros(0, dtype=torch.long)
    return out


def _rows(spec: RunSpec, round_: int, split: str, values: dict[str, float]) -> list[dict[str, Any]]:
    base = {
        "run_id": spec.run_id, "method": spec.method, "dataset": spec.dataset, "backbone": spec.backbone,
        "partition": spec.partition, "alpha": spec.alpha, "num_clients": spec.num_clients, "seed": spec.seed,
        "partition_id": spec.partition_id,
    }
    return [{**base, "round": round_, "split": split, "metric": k, "value": float(v)} for k, v in values.items()]


class HeldOutData(ServerData):
    """``RoundContext.server_data`` of a run with a validation carve: the server's own labelled data."""

    def __init__(self, s: Setup) -> None:
        self._s = s

    def features(self, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        s = self._s
        s.model.load_params(params)
        feats, _ = embed(s.model, s.val.images, s.eval_tf, s.spec.eval_batch_size, s.dtype)
        return feats, s.val.labels

    def loss(self, params: Params) -> float:
        s = self._s
        return evaluate(s.model, params, s.val, s.eval_tf, s.spec.eval_batch_size, s.dtype)["loss"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    method's), e.g. the union of the sweep's methods' requirements (client/round1_cache.py).

    A run that is already DONE is skipped (unless ``force``); one whose lock another live process holds
    is skipped too. An interrupted run resumes from its last completed round.
    """
    emit = on_event or (lambda *a, **k: None)
    store = RunStore(out)
    run_id = spec.run_id
    if store.is_done(run_id) and not force:
        return RunOutcome(run_id, store.run_dir(run_id), _final(store.metrics(run_id)), skipped=True)
    with store.lock(run_id) as held:
        if not held:
            emit("locked", run_id=run_id)
            return RunOutcome(run_id, store.run_dir(run_id), {}, skipped=True)
        if store.is_done(run_id) and not force:  # another process finished it between our check and the lock
            return RunOutcome(run_id, store.run_dir(run_id), _final(store.metrics(run_id)), skipped=True)
        if force:  # start afresh, but keep the finished run until the new one replaces it at commit
            store.discard(run_id, keep_checkpoint=False)
        try:
            body = functools.partial(_run_locked, spec, store, emit, bundle, (share_round1, round1_signals),
                                     replace=force)
            return body() if launcher is None else launcher.launch(spec, body)
        except BaseException:
            store.discard(run_id)  # keeps a partial run that has a checkpoint, so a rerun resumes it
            raise


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


RoundFn = Callable[[ServerState, int], TrainedRound]
# An engine: given the run's setup, method, local settings, event sink and server data, the function that
# trains and aggregates one round. ``name`` (an attribute) goes to env.json. None = the local engine.
Engine = Callable[["Setup", Method, LocalSettings, Event, ServerData | None], RoundFn]


def local_settings(s: Setup) -> LocalSettings:
    spec = s.spec
    return LocalSettings(spec.local_epochs, spec.batch_size, spec.lr, spec.weight_decay, s.dtype)


def round_context(s: Setup, round_: int, server_data: ServerData | None, global_class_stats: Any = None) -> RoundContext:
    """The server's context of a round (its random stream derives from the seed and the round)."""
    return RoundContext(round=round_, num_rounds=s.spec.rounds, num_classes=s.bundle.num_classes,
                        lora_scale=s.model.scale, device=s.device, server_data=server_data,
                        generator=generator(s.spec.seed, STREAM_SERVER, round_, device=s.device),
                        global_class_stats=global_class_stats)


def _local_engine(round1: Round1Cache | None, round1_signals: frozenset[Signal] | None) -> Engine:
    """The in-process engine: every sampled client trains here, one after another (or packed)."""

    def engine(s: Setup, method: Method, settings: LocalSettings, emit: Event,
               server_data: ServerData | None) -> RoundFn:
        def train_round(state: ServerState, round_: int) -> TrainedRound:
            t0 = time.perf_counter()
            with base_deltas_applied(s.model, state.base_deltas):
                updates, losses, images, shared = _client_phase(s, method, settings, state, round_, round1,
                                                                round1_signals, emit)
            _sync(s.device)
            t1 = time.perf_counter()
            comm = round_costs(updates, [state.params, state.base_deltas], method.requires)
            extra = GlobalStatsPass(s.model, {u.client_id: s.clients[u.client_id] for u in updates}, s.eval_tf,
                                    s.bundle.num_classes, settings, base_deltas=state.base_deltas)
            ctx = round_context(s, round_, server_data, extra)
            new = method.server_step(state, updates, ctx)
            _sync(s.device)
            t2 = time.perf_counter()
            comm = extra.add_costs(comm, len(updates))
            return TrainedRound(new, updates, ctx, losses, images, t1 - t0, t2 - t1 - extra.seconds,
                                {**comm, "clients_replied": float(len(updates))}, shared)

        return train_round

    return engine


def _run_locked(spec: RunSpec, store: RunStore, emit: Event, bundle: DatasetBundle | None,
                share: tuple[bool, frozenset[Signal] | None] = (False, None), replace: bool = False,
                engine: Engine | None = None) -> RunOutcome:
    run_id = spec.run_id
    method = spec.method_spec.build()
    s = setup_run(spec, bundle, partitions_dir=store.root / "partitions")
    round1 = Round1Cache.for_run(store.root, spec, method, s.device) if share[0] and engine is None else None
    engine = engine or _local_engine(round1, share[1])
    reset_peak_memory(s.device)
    partial = store.start(run_id)
    weights = provenance(spec)  # weights' sha256 (and pretrained tag), input size
    write_json(partial / "spec.json", {"run_id": run_id, **spec.model_dump(mode="json"), **weights})
    write_json(partial / "env.json", {**environment(str(s.device)), **weights, "engine": getattr(engine, "name", "local")})
    labels = s.bundle.train.labels.numpy()
    record_partition(partial, spec, s, store.root / "partitions")

    settings = local_settings(s)
    rows: list[dict[str, Any]] = []
    start_round = 1
    checkpoint = partial / "checkpoint.pt"
    saved = load_checkpoint(checkpoint, map_location=s.device)  # None: none yet, or damaged (set aside)
    if saved is not None:
        # Checkpoints before server state held only "params".
        state = ServerState.from_dict(saved["state"]) if "state" in saved else ServerState(saved["params"])
        rows = saved["rows"]
        start_round = saved["round"] + 1
        emit("resume", run_id=run_id, round=saved["round"])
    else:
        initial = s.model.initial_params(generator(spec.seed, STREAM_INIT))
        state = method.init_state({k: v.to(s.device) for k, v in initial.items()})
        rows += _rows(spec, 0, "test", evaluate(s.model, state.params, s.test, s.eval_tf, spec.eval_batch_size, s.dtype))
        if s.val is not None:
            rows += _rows(spec, 0, "val", evaluate(s.model, state.params, s.val, s.eval_tf, spec.eval_batch_size, s.dtype))
    server_data = HeldOutData(s) if s.val is not None else None
    if method.aggregator.personalised and not spec.eval_local:
        emit("warning", message=f"{spec.method} is a personalised method: its global accuracy is not its intended "
                                "metric; add --eval-local for each client's own accuracy (split test_local)")
    train_round = engine(s, method, settings, emit, server_data)

    emit("start", run_id=run_id, spec=spec, rounds=spec.rounds, clients=spec.num_clients, start_round=start_round)
    for round_ in range(start_round, spec.rounds + 1):
        t0 = time.perf_counter()
        done = train_round(state, round_)
        before, state, updates = state, done.state, done.updates
        t2 = time.perf_counter()
        evaluated = add_deltas(state.base_deltas, method.evaluation_deltas(state, updates, done.ctx))
        with base_deltas_applied(s.model, evaluated):
            metrics = evaluate(s.model, state.params, s.test, s.eval_tf, spec.eval_batch_size, s.dtype)
            if s.val is not None:
                rows += _rows(spec, round_, "val", evaluate(s.model, state.params, s.val, s.eval_tf, spec.eval_batch_size, s.dtype))
        if s.local_tests is not None:
            rows += _rows(spec, round_, "test_local", _local_metrics(s, method, before, state, updates))
        t3 = time.perf_counter()
        rows += _rows(spec, round_, "test", metrics)
        rows += _rows(spec, round_, "train", {"loss": float(np.mean(done.losses)),
                                              **client_diagnostics(updates, method.requires)})
        rows += _rows(spec, round_, "cost", {
            "train_s": done.train_s, "aggregate_s": done.aggregate_s, "eval_s": t3 - t2,
            "train_images_per_s": done.images / max(done.train_s, 1e-9), "wall_s": t3 - t0,
            **done.costs, **peak_memory(s.device),
            # a shared round 1: what it cost
            **(shared_cost(*done.shared, done.train_s, t3 - t0 - done.train_s) if done.shared else {}),
        })
        save_checkpoint(checkpoint, {"round": round_, "state": state.to_dict(), "rows": rows})
        emit("round", round=round_, metrics=metrics)
    frame = pd.DataFrame(rows)
    # Measured heterogeneity beside alpha, so tables can show what a given alpha actually produced.
    measured = heterogeneity(s.partition.class_counts(labels, s.bundle.num_classes))
    at = frame.columns.get_loc("alpha") + 1
    for offset, (name, value) in enumerate(measured.items()):
        frame.insert(at + offset, name, value)
    write_csv(partial / "metrics.csv", frame)
    bad = nonfinite_total(frame)
    if bad:
        emit("warning", run_id=run_id, message=f"run {run_id}: {bad} client step(s) had a non-finite LoRA signal "
             "contribution, which counted as zero (metric nonfinite_signal_steps in metrics.csv)")
    final_dir = store.commit(run_id, replace=replace)
    outcome = RunOutcome(run_id, final_dir, _final(frame))
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


def _client_phase(s: Setup, method: Method, settings: LocalSettings, state: ServerState, round_: int,
                  round1: Round1Cache | None, round1_signals: frozenset[Signal] | None,
                  emit: Event) -> tuple[list[ClientUpdate], list[float], int, tuple[Round1Result, bool] | None]:
    """Local training of the round's clients: (updates, mean losses, images seen, (shared round-1 result,
    reused) when round 1 went through the shared cache).

    The one client phase (``client.phase.train_clients``); in round 1 of a sweep the updates may come
    from, or go to, the shared round-1 cache.
    """
    spec, shared = s.spec, None
    todo, requires, hit = sample_clients(spec, round_), method.requires, None
    if round1 is not None and round_ == 1:  # shared first round: reuse, or train with more signals
        hit = round1.load(method.requires)
        todo, requires = ([] if hit else todo), round1.signals_to_collect(method.requires, round1_signals)
    start = time.perf_counter()  # round-1 training time, stored in the shared cache
    starts = {k: method.client_start(state, k) for k in todo}
    results = train_round_clients(s, method, settings, state.params, starts, round_, requires,
                                  lambda k, r: emit("client", round=round_, client=k, loss=r.mean_loss))
    updates = [r.update for r in results.values()]
    losses = [r.mean_loss for r in results.values()]
    images = sum(r.images for r in results.values())
    if round1 is not None and round_ == 1:
        _sync(s.device)
        view = round1.settle(hit, Round1Result(updates, losses, images, requires, time.perf_counter() - start),
                             method.requires)
        shared = (view, hit is not None)
        updates, losses, images = list(view.updates), list(view.losses), view.images
        for u, loss in zip(updates, losses, strict=True) if hit else ():
            emit("client", round=round_, client=u.client_id, loss=loss)
    return updates, losses, images, shared


def train_round_clients(s: Setup, method: Method, settings: LocalSettings, global_params: Params,
                        starts: dict[int, Params], round_: int, requires: frozenset[Signal],
                        on_client: Callable[[int, ClientResult], None] | None = None) -> dict[int, ClientResult]:
    """Train the clients of ``starts`` (client id -> its start, ``Method.client_start``) for one round.

    What the local engine runs for the round's clients and a Flower ClientApp for its own client: clients
    grouped by LoRA rank, each group under its LoRA scale, the method's frozen keys left unchanged.
    """
    spec = s.spec
    results = {}
    for rank, group in _rank_groups(spec, sorted(starts)):  # one group unless clients have different ranks
        scale = spec.lora_alpha / rank
        own = {k: with_rank(starts[k], rank) for k in group} if rank != spec.max_rank else \
            {k: starts[k] for k in group}
        personal = any(own[k] is not global_params for k in group)
        with s.model.scaled(scale):
            trained = train_clients(
                s.model, global_params, {k: s.clients[k] for k in group}, s.train_tf, method.objective, settings,
                seed=spec.seed, round_=round_, num_classes=s.bundle.num_classes, requires=requires, pack=spec.pack,
                on_client=on_client, starts=own if personal else None,
                frozen=method.frozen_keys(list(global_params)))
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


def nonfinite_total(frame: pd.DataFrame) -> int:
    """Client steps of a whole run whose LoRA signal contribution was dropped as non-finite."""
    rows = frame[(frame["split"] == "train") & (frame["metric"] == "nonfinite_signal_steps")]
    return int(rows["value"].sum())


def _final(frame: pd.DataFrame) -> dict[str, float]:
    """Last-round test metrics of a run."""
    test = frame[frame["split"] == "test"]
    last = test[test["round"] == test["round"].max()]
    return dict(zip(last["metric"], last["value"], strict=True))
