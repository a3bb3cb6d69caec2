"""`livar-bench status`: done / running / interrupted / pending runs of recorded sweeps."""

from __future__ import annotations

import os
import socket

import pytest

from livar_bench.config import make_spec
from livar_bench.experiments.executors import LocalExecutor
from livar_bench.experiments.sweep import SweepConfig, write_manifest
from livar_bench.store import RunStore
from tests._cli import invoke


class Stop(BaseException):
    pass


def test_status_counts_each_state(tmp_path, tiny_spec_values, monkeypatch, capsys):
    specs = [make_spec({**tiny_spec_values, "method": m}) for m in ("fedavg", "livar", "ties", "task_arithmetic")]
    write_manifest(SweepConfig(name="t"), specs, tmp_path)

    def crash_second_run(kind, **info):
        if kind == "round" and info["round"] == 1 and crash_second_run.runs == 2:
            raise Stop
        if kind == "run_start":
            crash_second_run.runs += 1

    crash_second_run.runs = 0
    with pytest.raises(Stop):
        LocalExecutor().run(specs, tmp_path, on_event=crash_second_run)
    store = RunStore(tmp_path)
    assert store.state(specs[0].run_id) == ("done", None)
    assert store.state(specs[1].run_id) == ("interrupted", 1)
    assert store.state(specs[3].run_id) == ("pending", None)
    # a lock file naming a live pid is not enough (pids are reused): only a held lock makes it "running"
    locks = tmp_path / "runs" / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / f"{specs[2].run_id}.lock").write_text(f"{os.getpid()}@{socket.gethostname()}")
    assert store.state(specs[2].run_id)[0] == "pending"
    with store.lock(specs[2].run_id) as held:
        assert held and store.state(specs[2].run_id)[0] == "running"
        code, out, err = invoke(["status", "--out", str(tmp_path), "--runs"], monkeypatch, capsys)
    assert code == 0, err
    row = next(line for line in out.splitlines() if "│ t " in line)
    assert [c.strip() for c in row.split("│")[3:8]] == ["4", "1", "1", "1", "1"]
    assert f"{specs[1].run_id}  interrupted after round 1  livar" in out


def test_status_names_each_damaged_run_and_why(tmp_path, tiny_spec_values, monkeypatch, capsys):
    specs = [make_spec({**tiny_spec_values, "method": m, "rounds": 1}) for m in ("fedavg", "livar", "ties")]
    write_manifest(SweepConfig(name="t"), specs, tmp_path)
    LocalExecutor().run(specs, tmp_path)
    store = RunStore(tmp_path)
    with open(store.run_dir(specs[0].run_id) / "metrics.csv", "a") as f:
        f.write("tampered\n")
    (store.run_dir(specs[2].run_id) / "DONE").write_text("{not json")
    code, out, err = invoke(["status", "--out", str(tmp_path)], monkeypatch, capsys)  # without --runs too
    assert code == 0, err
    damaged = [line for line in out.splitlines() if line.startswith("damaged: ")]
    assert damaged == [
        f"damaged: {specs[0].run_id}  fedavg synthetic alpha=0.5 seed=0: metrics.csv changed after the run "
        "finished; the next sweep (or run) with its settings reruns it",
        f"damaged: {specs[2].run_id}  ties synthetic alpha=0.5 seed=0: its DONE marker is damaged; the next sweep "
        "(or run) with its settings reruns it",
    ]
    row = next(line for line in out.splitlines() if "│ t " in line)
    assert [c.strip() for c in row.split("│")[3:8]] == ["3", "1", "0", "0", "0"] and row.split("│")[8].strip() == "2"
