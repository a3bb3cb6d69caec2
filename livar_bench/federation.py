"""The round loop: the one place where model, device, data and method meet.

    partition (seeded) -> initial trainable tensors (seeded) -> for each round: for each sampled client:
    local_train -> ClientUpdate; method.server_step -> evaluate -> tidy metric rows -> checkpoint

Every random stream is derived from (seed, purpose, round, client), never from global RNG state, so:
- all methods of one (dataset, alpha, seed) see the same partition, initial weights and client data
  order (paired comparisons);
- a run interrupted after round r resumes from its checkpoint and gives the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from livar_bench.client.train import LocalSettings, evaluate, local_train
from livar_bench.config import RunSpec
from livar_bench.data import DatasetBundle, LoadOptions, load_dataset
from livar_bench.data.partition import Partition, dirichlet_partition, heterogeneity, iid_partition
from livar_bench.data.transforms import DeviceTransform
from livar_bench.errors import BenchError
from livar_bench.methods import RoundContext, parse_method
from livar_bench.methods.base import ClientUpdate, Params
from livar_bench.models import build_model
from livar_bench.store import RunStore, environment, write_csv, write_json

# Purposes of the derived random streams (part of the seed derivation; never reorder).
STREAM_PARTITION, STREAM_INIT, STREAM_CLIENT, STREAM_SERVER, STREAM_SAMPLE = range(5)

Event = Callable[..., None]


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from the run seed and stream keys (independent streams per key tuple)."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def generator(seed: int, *keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *keys))


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


def make_partition(spec: RunSpec, labels: np.ndarray) -> Partition:
    rng = np.random.default_rng(derive_seed(spec.seed, STREAM_PARTITION))
    if spec.partition == "iid":
        return iid_partition(len(labels), spec.num_clients, rng, spec.min_client_samples)
    return dirichlet_partition(labels, spec.num_clients, spec.alpha, rng, spec.min_client_samples)


def partition_summary(spec: RunSpec, partition: Partition, labels: np.ndarray, num_classes: int) -> dict[str, Any]:
    counts = partition.class_counts(labels, num_classes)
    return {
        "partition_id": spec.partition_id,
        "fingerprint": partition.fingerprint(),
        "scheme": spec.partition,
        "alpha": spec.alpha,
        "num_clients": spec.num_clients,
        "sizes": partition.sizes().tolist(),
        "class_counts": counts.tolist(),
        **heterogeneity(counts),
    }


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


def setup_run(spec: RunSpec, bundle: DatasetBundle | None = None) -> Setup:
    """Load data, build the shared model, draw the partition and move client data to the device."""
    device = resolve_device(spec.device)
    if bundle is None:
        options = LoadOptions(spec.data_root, spec.cache_dir, spec.download, storage_size=spec.image_size or 224)
        bundle = load_dataset(spec.dataset, options, spec.max_train_samples, spec.max_test_samples)
    model, info = build_model(
        spec.backbone, bundle.num_classes, rank=spec.lora_rank, alpha=spec.lora_alpha, targets=spec.lora_targets,
        pretrained=spec.pretrained, weights=spec.weights, image_size=spec.image_size,
    )
    model.to(device)
    train_tf = DeviceTransform(info.input_size, info.mean, info.std, scale=bundle.crop_scale, eval_crop=bundle.eval_crop)
    labels = bundle.train.labels.numpy()
    partition = make_partition(spec, labels)
    train = bundle.train.to(device)
    clients = [train.subset(torch.from_numpy(ix).to(device)) for ix in partition.client_indices]
    return Setup(spec, device, bundle, model, train_tf, train_tf, partition, clients, bundle.test.to(device),
                 autocast_dtype(spec, device))


def _rows(spec: RunSpec, round_: int, split: str, values: dict[str, float]) -> list[dict[str, Any]]:
    base = {
        "run_id": spec.run_id, "method": spec.method, "dataset": spec.dataset, "backbone": spec.backbone,
        "partition": spec.partition, "alpha": spec.alpha, "num_clients": spec.num_clients, "seed": spec.seed,
        "partition_id": spec.partition_id,
    }
    return [{**base, "round": round_, "split": split, "metric": k, "value": float(v)} for k, v in values.items()]


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
) -> RunOutcome:
    """Run one federated experiment and store it under ``<out>/runs/<run_id>``.

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
        if force and store.run_dir(run_id).exists():
            import shutil

            shutil.rmtree(store.run_dir(run_id))
        return _run_locked(spec, store, emit, bundle)


def _run_locked(spec: RunSpec, store: RunStore, emit: Event, bundle: DatasetBundle | None) -> RunOutcome:
    run_id = spec.run_id
    method = parse_method(spec.method)
    s = setup_run(spec, bundle)
    partial = store.start(run_id)
    write_json(partial / "spec.json", {"run_id": run_id, **spec.model_dump(mode="json")})
    write_json(partial / "env.json", environment(str(s.device)))
    labels = s.bundle.train.labels.numpy()
    write_json(partial / "partition.json", partition_summary(spec, s.partition, labels, s.bundle.num_classes))

    settings = LocalSettings(spec.local_epochs, spec.batch_size, spec.lr, spec.weight_decay, s.dtype)
    rows: list[dict[str, Any]] = []
    start_round = 1
    checkpoint = partial / "checkpoint.pt"
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=s.device, weights_only=False)
        global_params: Params = state["params"]
        rows = state["rows"]
        start_round = state["round"] + 1
        emit("resume", run_id=run_id, round=state["round"])
    else:
        global_params = {k: v.to(s.device) for k, v in s.model.initial_params(generator(spec.seed, STREAM_INIT)).items()}
        rows += _rows(spec, 0, "test", evaluate(s.model, global_params, s.test, s.eval_tf, spec.eval_batch_size, s.dtype))

    emit("start", run_id=run_id, spec=spec, rounds=spec.rounds, clients=spec.num_clients, start_round=start_round)
    for round_ in range(start_round, spec.rounds + 1):
        t0 = time.perf_counter()
        updates: list[ClientUpdate] = []
        losses, images = [], 0
        for k in sample_clients(spec, round_):
            result = local_train(
                s.model, global_params, s.clients[k], s.train_tf, method.objective, settings,
                generator(spec.seed, STREAM_CLIENT, round_, k, device=s.device), s.bundle.num_classes,
                method.requires, client_id=k,
            )
            updates.append(result.update)
            losses.append(result.mean_loss)
            images += result.images
            emit("client", round=round_, client=k, loss=result.mean_loss)
        _sync(s.device)
        t1 = time.perf_counter()
        ctx = RoundContext(round=round_, num_rounds=spec.rounds, num_classes=s.bundle.num_classes,
                           lora_scale=s.model.scale, generator=generator(spec.seed, STREAM_SERVER, round_, device=s.device),
                           device=s.device)
        global_params = method.server_step(global_params, updates, ctx)
        _sync(s.device)
        t2 = time.perf_counter()
        metrics = evaluate(s.model, global_params, s.test, s.eval_tf, spec.eval_batch_size, s.dtype)
        t3 = time.perf_counter()
        rows += _rows(spec, round_, "test", metrics)
        rows += _rows(spec, round_, "train", {"loss": float(np.mean(losses))})
        rows += _rows(spec, round_, "cost", {
            "train_s": t1 - t0, "aggregate_s": t2 - t1, "eval_s": t3 - t2,
            "train_images_per_s": images / max(t1 - t0, 1e-9),
        })
        torch.save({"round": round_, "params": global_params, "rows": rows}, checkpoint.with_suffix(".tmp"))
        checkpoint.with_suffix(".tmp").replace(checkpoint)
        emit("round", round=round_, metrics=metrics)
    frame = pd.DataFrame(rows)
    write_csv(partial / "metrics.csv", frame)
    final_dir = store.commit(run_id)
    outcome = RunOutcome(run_id, final_dir, _final(frame))
    emit("done", run_id=run_id, final=outcome.final)
    return outcome


def _final(frame: pd.DataFrame) -> dict[str, float]:
    """Last-round test metrics of a run."""
    test = frame[frame["split"] == "test"]
    last = test[test["round"] == test["round"].max()]
    return dict(zip(last["metric"], last["value"]))
