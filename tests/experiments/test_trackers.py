"""Experiment trackers, read back with each tool's own reader: TensorBoard's EventAccumulator, MLflow's client on
the local SQLite store, and W&B's offline run files (their LevelDB-log framing read here, each record decoded
with wandb's own protobuf classes). Every round's test accuracy there equals metrics.csv; a crashed and resumed
run is one tracker run; a tracker that fails leaves the results folder as a run without it would."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from livar_bench.experiments import sweep as sw
from livar_bench.experiments.executors import LocalExecutor
from livar_bench.experiments.trackers import TrackerConfig, Trackers, check_trackers, fan_out
from livar_bench.store import RunStore
from tests._cli import assert_user_error, invoke
from tests._faults import Injected
from tests._results import science

MICRO = dict(backbone="livar_micro_vit", num_clients=3, rounds=2, local_epochs=1, batch_size=32, lr=3e-3,
             lora_rank=2, lora_alpha=2.0, device="cpu", dataset="synthetic")
NEEDS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
GROUP = "sweep-trackers-test"


def installed(name: str) -> bool:
    return importlib.util.find_spec(NEEDS[name]) is not None


AVAILABLE = tuple(n for n in NEEDS if installed(n))


def needs(name: str):
    return pytest.mark.skipif(not installed(name), reason=f"{NEEDS[name]} is not installed "
                                                          f"(pip install 'livar-bench[{name}]')")


def csv_accuracy(out: Path) -> dict[str, dict[int, float]]:
    """run id -> {round: test accuracy} from each finished run's metrics.csv."""
    found = {}
    for run_id in RunStore(out).done_ids():
        m = pd.read_csv(RunStore(out).run_dir(run_id) / "metrics.csv", dtype={"run_id": str})
        acc = m[(m["split"] == "test") & (m["metric"] == "acc")]
        found[run_id] = {int(r): float(v) for r, v in zip(acc["round"], acc["value"], strict=True)}
    return found


def test_by_round_keys_every_split_and_leaves_out_per_client_rows():
    from livar_bench.experiments.trackers.base import by_round

    rows = [{"round": 1, "split": "test", "metric": "acc", "value": 0.5},
            {"round": 0, "split": "test", "metric": "acc", "value": 0.1},
            {"round": 1, "split": "privacy", "metric": "epsilon", "value": 2},
            {"round": 1, "split": "clients", "metric": "local_steps", "value": 7, "client": 3},
            {"round": 1, "split": "cost", "metric": "wall_s", "value": 1.5, "client": float("nan")}]
    steps = by_round(rows)
    assert list(steps) == [0, 1]  # in round order
    assert steps == {0: {"test/acc": 0.1}, 1: {"test/acc": 0.5, "privacy/epsilon": 2.0, "cost/wall_s": 1.5}}


# --- the three readers ------------------------------------------------------------------------------

def tensorboard_runs(root: Path) -> dict[str, tuple[str, dict[int, float], int]]:
    """run id -> (sweep folder, {step: test/acc} as TensorBoard's EventAccumulator reads it, raw events of test/acc)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    runs = {}
    for logdir in sorted(p for p in root.glob("*/*") if p.is_dir()):
        acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
        acc.Reload()
        raw = sum(1 for f in logdir.glob("events.out.tfevents.*") for e in EventFileLoader(str(f)).Load()
                  if e.HasField("summary") and any(v.tag == "test/acc" for v in e.summary.value))
        run_id = logdir.name.rsplit("-", 1)[1]
        runs[run_id] = (logdir.parent.name, {e.step: e.value for e in acc.Scalars("test/acc")}, raw)
    return runs


def mlflow_runs(out: Path) -> list[dict]:
    """Every MLflow run of the results folder's SQLite store: tags, status, test/acc history, artifacts."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("livar-bench")
    found = []
    for run in client.search_runs([experiment.experiment_id]):
        history = client.get_metric_history(run.info.run_id, "test/acc")
        found.append({"tags": run.data.tags, "status": run.info.status, "params": run.data.params,
                      "acc": [(m.step, m.value) for m in history],
                      "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id, "livar"))})
    return found


def wandb_records(path: Path):
    """Records of a .wandb file: a 7-byte W&B header, then LevelDB's log format (32 KiB blocks; each chunk
    has crc32c:4, length:2, type:1 with 1 full, 2 first, 3 middle, 4 last), decoded as wandb Record protos."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pieces = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        payload, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pieces + payload if kind == 4 else payload)
            pieces = b""
            yield record
        else:
            pieces = payload if kind == 2 else pieces + payload


def wandb_runs(folder: Path) -> list[dict]:
    """One entry per offline run folder: its run id, group, exit code and {step: test/acc}."""
    found = []
    for path in sorted(folder.glob("offline-run-*/run-*.wandb")):
        run = {"id": None, "group": None, "exit": None, "acc": {}, "tags": []}
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run.update(id=record.run.run_id, group=record.run.run_group, tags=list(record.run.tags))
            elif kind == "history":
                items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
                if "test/acc" in items:
                    run["acc"][int(items["_step"])] = items["test/acc"]
            elif kind == "exit":
                run["exit"] = record.exit.exit_code
        found.append(run)
    return found


# --- a crashed and resumed sweep, mirrored into every installed tracker -------------------------------

@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """2-round sweep of two runs with every installed tracker; it crashes in the 2nd run after round 1 and
    is rerun to completion (the rerun resumes that run from its checkpoint)."""
    if not AVAILABLE:
        pytest.skip("no tracker package installed (pip install 'livar-bench[trackers]')")
    out = tmp_path_factory.mktemp("tracked")
    specs = sw.expand(sw.parse_sweep({"grid": {"methods": ["fedavg", "fedprox"], "seeds": [0]}, "base": MICRO}))
    state = {"index": -1}

    def crash(event, **info):
        if event == "run_start":
            state["index"] = info["index"]
        if event == "round" and state["index"] == 1 and info["round"] == 1:
            raise Injected("crash after round 1 of the 2nd run")

    config = TrackerConfig(AVAILABLE, GROUP)
    with pytest.raises(Injected), Trackers(config, out) as hub:
        LocalExecutor().run(specs, out, on_event=fan_out(hub, crash))
    interrupted = specs[1].run_id
    assert (RunStore(out).partial_dir(interrupted) / "checkpoint.pt").is_file()
    events = []
    with Trackers(config, out) as hub:
        LocalExecutor().run(specs, out, on_event=fan_out(hub, lambda e, **i: events.append(e)))
    assert "resume" in events
    return {"out": out, "specs": specs, "interrupted": interrupted, "csv": csv_accuracy(out)}


@needs("tensorboard")
def test_tensorboard_holds_every_round_once(tracked):
    runs = tensorboard_runs(tracked["out"] / "tensorboard")
    assert set(runs) == set(tracked["csv"])  # one TensorBoard run per run, the resumed one included
    for run_id, (group, acc, raw) in runs.items():
        assert group == GROUP
        # TensorBoard stores scalars as float32
        assert acc == {r: float(np.float32(v)) for r, v in tracked["csv"][run_id].items()}
        assert raw == len(acc)  # no round written twice, even across the crash (raw event files, no purging)


@needs("mlflow")
def test_mlflow_holds_every_round_once(tracked):
    runs = mlflow_runs(tracked["out"])
    by_id = {r["tags"]["livar.run_id"]: r for r in runs}
    assert len(runs) == len(by_id) == len(tracked["csv"])  # the resumed run is one MLflow run, not two
    for run_id, run in by_id.items():
        assert run["acc"] == sorted(tracked["csv"][run_id].items())
        assert run["status"] == "FINISHED"
        assert run["tags"]["livar.sweep"] == GROUP
        assert run["tags"]["livar.partition_id"] == json.loads(
            (RunStore(tracked["out"]).run_dir(run_id) / "partition.json").read_text())["partition_id"]
        assert run["params"]["rounds"] == "2" and run["params"]["method"] in ("fedavg", "fedprox")
        assert run["artifacts"] == ["livar/accuracy_per_round.png", "livar/env.json", "livar/metrics.csv",
                                    "livar/partition.json", "livar/spec.json"]


@needs("wandb")
def test_wandb_offline_holds_every_round_once(tracked):
    runs = wandb_runs(tracked["out"] / "wandb")
    by_run = {r["id"].rsplit("-", 1)[0]: r for r in runs}
    assert len(runs) == len(by_run) == len(tracked["csv"])  # one offline run to sync per run
    for run_id, run in by_run.items():
        assert run["acc"] == tracked["csv"][run_id]
        assert run["group"] == GROUP and run["exit"] == 0 and f"run_id={run_id}" in run["tags"]
    # the crashed process's offline folder of the resumed run was set aside, under the same W&B id
    superseded = wandb_runs(tracked["out"] / "wandb" / "superseded")
    assert [r["id"] for r in superseded] == [by_run[tracked["interrupted"]]["id"]]


@needs("tensorboard")
def test_tune_mirrors_each_tuning_run_into_one_group(tmp_path, monkeypatch, capsys):
    """``tune --tracker tensorboard``: one TensorBoard run per tuning run, grouped by the tuned method, holding
    the validation accuracy the choice was made on (and the test accuracy) of each round."""
    args = ["tune", "--method", "ties", "--grid", "density=0.2,1.0", "--dataset", "synthetic", "--backbone",
            "livar_micro_vit", "--clients", "3", "--rounds", "1", "--epochs", "1", "--lr", "3e-3", "--lora-rank", "2",
            "--lora-alpha", "2", "--max-train-samples", "150", "--max-test-samples", "40", "--device", "cpu",
            "--out", str(tmp_path), "--tracker", "tensorboard"]
    code, _, err = invoke(args, monkeypatch, capsys)
    assert code == 0 and "warning:" not in err, err
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = json.loads((tmp_path / "tuning" / "ties.json").read_text())
    folders = sorted((tmp_path / "tuning" / "tensorboard" / "tune-ties").iterdir())
    assert sorted(f.name.rsplit("-", 1)[1] for f in folders) == sorted(e["run_ids"][0] for e in record["results"])
    for folder in folders:
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        m = pd.read_csv(tmp_path / "tuning" / "runs" / folder.name.rsplit("-", 1)[1] / "metrics.csv")
        for tag in ("val/acc", "test/acc"):
            split, metric = tag.split("/")
            rows = m[(m["split"] == split) & (m["metric"] == metric)]
            assert {e.step: e.value for e in acc.Scalars(tag)} == \
                {int(r): float(np.float32(v)) for r, v in zip(rows["round"], rows["value"], strict=True)}


# --- failing trackers --------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RUN = ["run", "--dataset", "synthetic", "--method", "fedavg", "--backbone", "livar_micro_vit", "--clients", "3",
       "--rounds", "2", "--epochs", "1", "--lora-rank", "2", "--lora-alpha", "2", "--device", "cpu"]


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*"))


def test_failing_trackers_are_one_warning_each_and_change_nothing(tmp_path, monkeypatch, capsys):
    """Missing packages (wandb, tensorboard made unimportable) and an MLflow server on a loopback port that
    nobody listens on: the run finishes, one warning line per tracker, and the folder equals a plain run's."""
    code, _, err = invoke([*RUN, "--out", str(tmp_path / "plain")], monkeypatch, capsys)
    assert code == 0, err
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError, as when absent
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    code, stdout, err = invoke([*RUN, "--out", str(tmp_path / "tracked"), "--tracker", "wandb", "--tracker",
                                "mlflow", "--tracker", "tensorboard"], monkeypatch, capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3, err
    assert any("wandb" in w and "pip install 'livar-bench[wandb]'" in w for w in warnings), warnings
    assert any("tensorboard" in w and "pip install 'livar-bench[tensorboard]'" in w for w in warnings), warnings
    assert any("mlflow" in w and "does not answer" in w for w in warnings), warnings
    assert "final test acc" in stdout
    plain, tracked = tmp_path / "plain", tmp_path / "tracked"
    assert _files(tracked) == _files(plain)
    assert science(tracked).equals(science(plain))
    (run_id,) = RunStore(plain).done_ids()
    for name in ("spec.json", "partition.json"):
        assert (tracked / "runs" / run_id / name).read_bytes() == (plain / "runs" / run_id / name).read_bytes()


def test_unknown_tracker_is_a_user_error(tmp_path, monkeypatch, capsys):
    code, _, err = invoke([*RUN, "--out", str(tmp_path), "--tracker", "neptune"], monkeypatch, capsys)
    assert_user_error(code, err, tmp_path, "unknown tracker 'neptune'", "--tracker tensorboard")
    assert check_trackers(["MLflow", "mlflow", "wandb"]) == ("mlflow", "wandb")


def test_a_stuck_tracker_is_left_behind_with_one_warning(tmp_path, monkeypatch, capsys):
    """A tracker that never returns (a hung server) costs the run at most the wait, then is given up."""
    import threading

    from livar_bench.experiments.trackers import hub as hub_module

    release = threading.Event()

    class Hung:
        def open(self, run, previous, save):
            release.wait(60)

    monkeypatch.setitem(hub_module.TRACKERS, "mlflow", ("tests.experiments.test_trackers", "Hung", "mlflow"))
    monkeypatch.setattr(sys.modules[__name__], "Hung", Hung, raising=False)
    monkeypatch.setattr(hub_module, "WAIT_S", 1.0)
    specs = sw.expand(sw.parse_sweep({"grid": {"methods": ["fedavg"], "seeds": [0]}, "base": MICRO}))
    with Trackers(TrackerConfig(("mlflow",)), tmp_path) as hub:
        result = LocalExecutor().run(specs, tmp_path, on_event=hub)
    release.set()  # the hung call returns; the lane, given up, drops the rest and its thread ends
    (lane,) = hub.lanes
    lane._thread.join(30)
    assert not lane._thread.is_alive()
    assert result.trained == 1 and not result.failures
    err = capsys.readouterr().err
    assert err.count("warning: mlflow tracker stopped (still writing after 1 s") == 1, err


# --- a real kill -9 through the command line ----------------------------------------------------------

@pytest.mark.slow
def test_killed_sweep_with_every_tracker_resumes_into_the_same_tracker_runs(tmp_path):
    """``livar-bench sweep --tracker ...`` killed with SIGKILL in its 2nd run after round 1, rerun: each tool
    holds one run per run and every round once (W&B's killed offline file may even be cut short)."""
    if not AVAILABLE:
        pytest.skip("no tracker package installed (pip install 'livar-bench[trackers]')")
    args = [sys.executable, "-m", "livar_bench", "sweep", "--datasets", "synthetic", "--methods", "fedavg,fedprox",
            "--alphas", "0.5", "--seeds", "0", "--backbone", "livar_micro_vit", "--clients", "3", "--rounds", "3",
            "--epochs", "1", "--lora-rank", "2", "--lora-alpha", "2", "--device", "cpu", "--out", str(tmp_path)]
    for name in AVAILABLE:
        args += ["--tracker", name]
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:
        if "[2/2]" in line and "round 1" in line:
            proc.kill()
            break
    proc.wait()
    assert len(RunStore(tmp_path).done_ids()) == 1
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "resuming after round 1" in done.stderr and "warning:" not in done.stderr, done.stderr
    csv = csv_accuracy(tmp_path)
    if "tensorboard" in AVAILABLE:
        runs = tensorboard_runs(tmp_path / "tensorboard")
        assert {k: v[1] for k, v in runs.items()} == {k: {r: float(np.float32(a)) for r, a in v.items()}
                                                     for k, v in csv.items()}
        assert all(raw == len(acc) for _, acc, raw in runs.values())
    if "mlflow" in AVAILABLE:
        runs = mlflow_runs(tmp_path)
        assert sorted((r["tags"]["livar.run_id"], tuple(r["acc"])) for r in runs) == \
            sorted((k, tuple(sorted(v.items()))) for k, v in csv.items())
    if "wandb" in AVAILABLE:
        runs = wandb_runs(tmp_path / "wandb")
        assert {r["id"].rsplit("-", 1)[0]: r["acc"] for r in runs} == csv and len(runs) == len(csv)
