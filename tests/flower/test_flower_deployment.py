"""A real Flower deployment on loopback, as examples/flower/README.md walks through it (slow; run by .ci/run).

``examples/flower/local_deployment.py`` starts a SuperLink and two SuperNodes (partition ids 0, 1) on
free 127.0.0.1 ports, each Flower process with this checkout on its path and a private ``FLWR_HOME``;
``flwr run`` submits the example App to it.

- The run's metrics, run id and partition file equal ``livar-bench run --engine local`` with the same
  settings: the example's ``quick.yaml`` (named relative to the App's folder, so read from the App
  bundle Flower installed; its backbone and rank override the App's pyproject) with ``rounds=1`` given
  to ``--run-config`` over the YAML's 2, i.e. ``livar-bench run --config quick.yaml --rounds 1``.
- Three clients asked of two SuperNodes: the server says it waits for 3 and 2 are connected, then ends
  the run with one ``error:`` line within ``node-wait-s`` (plus Flower's start-up), no traceback, and
  the results folder as it was.
- Every process the deployment started is gone afterwards (also when a test fails): checked against
  the process tree taken before ``local_deployment.py stop``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("flwr")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "flower"
SCRIPT = EXAMPLE / "local_deployment.py"
TOL = 1e-6
WAIT_S = 10


def _flwr() -> str:
    here = Path(sys.executable).parent / "flwr"
    return str(here) if here.is_file() else shutil.which("flwr") or "flwr"


def _tree(state: dict) -> list[psutil.Process]:
    procs = []
    for entry in [*state.get("supernodes", []), *([state["superlink"]] if "superlink" in state else [])]:
        try:
            root = psutil.Process(entry["pid"])
            procs += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return procs


def _running(procs: list[psutil.Process]) -> list[psutil.Process]:
    left = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except psutil.NoSuchProcess:
            continue
    return left


class Deployment:
    def __init__(self, root: Path, env: dict[str, str], state: dict) -> None:
        self.root, self.env, self.state = root, env, state

    def run(self, run_config: str, timeout: float) -> tuple[str, float]:
        """``flwr run`` of the example App on this deployment: (its output without colours, seconds)."""
        start = time.monotonic()
        done = subprocess.run([_flwr(), "run", str(EXAMPLE), "loopback", "--stream", "--run-config", run_config],
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
        return text, time.monotonic() - start


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("deployment")
    home = root / "flwr"
    home.mkdir()
    env = {**os.environ, "FLWR_HOME": str(home), "OMP_NUM_THREADS": "1",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    folder = root / "state"
    started: list[psutil.Process] = []
    try:
        subprocess.run([sys.executable, str(SCRIPT), "start", "--nodes", "2", "--port", "0", "--dir", str(folder)],
                       env=env, check=True, capture_output=True, text=True, timeout=150)
        state = json.loads((folder / "deployment.json").read_text())
        (home / "config.toml").write_text(f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\n'
                                          f'address = "{state["address"]}"\ninsecure = true\n')
        assert state["address"].startswith("127.0.0.1:") and len(state["supernodes"]) == 2
        started = _tree(state)
        yield Deployment(root, env, state)
    finally:
        if (folder / "deployment.json").is_file():
            started += _tree(json.loads((folder / "deployment.json").read_text()))
        stopped = subprocess.run([sys.executable, str(SCRIPT), "stop", "--dir", str(folder)], env=env,
                                 capture_output=True, text=True, timeout=90)
        left = _running(started)
        for proc in left:  # the test's own safety net: nothing it started outlives it
            proc.kill()
        assert not left, f"still running after stop: {[p.pid for p in left]}\n{stopped.stdout}{stopped.stderr}"
        assert stopped.returncode == 0, stopped.stderr


def _learning(frame: pd.DataFrame) -> pd.Series:
    keep = frame[frame["split"].isin(["test", "train"])].sort_values(["round", "split", "metric"])
    return keep.set_index(["round", "split", "metric"])["value"]


def test_a_loopback_deployment_gives_the_local_engine_metrics(deployment, tmp_path):
    from livar_bench.cli import app

    out, local = tmp_path / "flower", tmp_path / "local"
    text, seconds = deployment.run(f"config='quick.yaml' rounds=1 out='{out}'", timeout=400)
    assert "livar+ccvr on digits: final test" in text, text
    print(f"flwr run on the loopback deployment: {seconds:.1f} s")
    assert f"config file {deployment.env['FLWR_HOME']}/apps/" in text  # read from the App Flower installed

    # The same settings on the command line: the YAML, --rounds over it.
    result = CliRunner().invoke(app, ["run", "--engine", "local", "--config", str(EXAMPLE / "quick.yaml"),
                                      "--rounds", "1", "--out", str(local)])
    assert result.exit_code == 0, result.output
    runs = [p.name for p in (local / "runs").iterdir()]
    assert [p.name for p in (out / "runs").iterdir()] == runs and len(runs) == 1
    run_id = runs[0]
    assert f"livar-bench: run {run_id}: livar+ccvr on digits, 2 clients, 1 rounds" in text
    a = _learning(pd.read_csv(local / "runs" / run_id / "metrics.csv"))
    b = _learning(pd.read_csv(out / "runs" / run_id / "metrics.csv"))
    assert list(a.index) == list(b.index) and len(a) > 0
    assert (a - b).abs().max() <= TOL, pd.DataFrame({"local": a, "flower": b})
    assert (local / "runs" / run_id / "partition.json").read_text() == (out / "runs" / run_id / "partition.json").read_text()
    spec = json.loads((out / "runs" / run_id / "spec.json").read_text())
    assert (spec["backbone"], spec["lora_rank"], spec["rounds"], spec["num_clients"]) == ("livar_micro_vit", 2, 1, 2)
    assert '"engine": "flower"' in (out / "runs" / run_id / "env.json").read_text()


def test_three_clients_of_two_supernodes_end_with_one_line_within_the_wait(deployment, tmp_path):
    out = tmp_path / "three"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    text, seconds = deployment.run(f"config='quick.yaml' num-clients=3 node-wait-s={WAIT_S} out='{out}'", timeout=300)
    print(f"three clients of two SuperNodes: flwr run ended after {seconds:.1f} s (node-wait-s = {WAIT_S})")
    assert "waiting for 3 SuperNodes (partition ids 0 .. 2): 2 connected" in text, text
    errors = [line for line in text.splitlines() if "error: " in line]
    assert len(errors) == 1, text
    assert errors[0].endswith(f"error: only 2 of the 3 SuperNodes this run needs connected within {WAIT_S} s: "
                              f"start one SuperNode per partition id 0 .. 2 (num-clients must equal the number "
                              f"of SuperNodes), or allow them longer with node-wait-s"), text
    assert "Traceback" not in text
    assert seconds < WAIT_S + 90  # Flower starts the ServerApp process, which imports torch, before it waits
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
