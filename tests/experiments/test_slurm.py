"""``sweep --executor slurm`` through submitit: option checks here; end to end with submitit's local executor
(each job a process on this machine): a 4-run grid with one job killed midway, the rerun resumes it, and the
table equals the local executor's."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from livar_bench.errors import BenchError
from livar_bench.experiments.slurm import SlurmOptions
from tests._cli import assert_user_error, invoke
from tests._results import science

REPO = Path(__file__).resolve().parents[2]
GRID = ["--datasets", "synthetic", "--methods", "fedavg,fedprox", "--alphas", "0.5", "--seeds", "0,1",
        "--backbone", "livar_micro_vit", "--clients", "3", "--rounds", "3", "--epochs", "1", "--lora-rank", "2",
        "--lora-alpha", "2", "--device", "cpu"]
needs_submitit = pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                                    reason="submitit is not installed (pip install 'livar-bench[slurm]')")


def test_slurm_parameters_reach_submitit():
    params = SlurmOptions(partition="gpu", time_min=90, gpus=1, cpus=8, mem_gb=32, array=10,
                          setup=("module load cuda",), extra={"account": "lab"}).parameters()
    assert params["slurm_partition"] == "gpu" and params["timeout_min"] == 90 and params["gpus_per_node"] == 1
    assert params["cpus_per_task"] == 8 and params["mem_gb"] == 32 and params["slurm_array_parallelism"] == 10
    assert params["slurm_setup"] == ["module load cuda"] and params["slurm_additional_parameters"] == {"account": "lab"}
    local = SlurmOptions(cluster="local", partition="gpu").parameters()
    assert not any(k.startswith("slurm_") for k in local)  # the local executor takes no Slurm settings


@pytest.mark.parametrize(("options", "needle"), [
    (dict(cluster="pbs"), "unknown --slurm-cluster 'pbs'"),
    (dict(cluster="local", time_min=0), "--slurm-time 0"),
    (dict(cluster="local", runs_per_job=0), "--runs-per-job 0"),
])
def test_bad_slurm_options_are_refused(options, needle):
    with pytest.raises(BenchError, match=needle.replace("[", r"\[")):
        SlurmOptions(**options).check()


@needs_submitit
def test_no_sbatch_says_where_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on it
    code, _, err = invoke(["sweep", *GRID, "--executor", "slurm", "--out", str(tmp_path / "out")], monkeypatch, capsys)
    assert_user_error(code, err, tmp_path / "out", "sbatch not found", "--slurm-cluster local")


def test_missing_submitit_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)
    code, _, err = invoke(["sweep", *GRID, "--executor", "slurm", "--slurm-cluster", "local", "--out",
                           str(tmp_path)], monkeypatch, capsys)
    assert_user_error(code, err, tmp_path, "pip install 'livar-bench[slurm]'")


def _tool(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


@needs_submitit
def test_a_cluster_gets_the_options_as_sbatch_lines_and_a_dead_job_names_its_log(tmp_path, monkeypatch, capsys):
    """On a Slurm cluster (here: stand-ins for sbatch, srun and sacct, as this machine has no Slurm): the
    sweep submits one job array whose sbatch script carries every --slurm-* option, and jobs that the
    cluster reports as dead (out of memory) are failures naming their log; no run is left half-written."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    _tool(bin_ / "srun", "exit 0")
    _tool(bin_ / "sbatch", f'cp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"')
    _tool(bin_ / "sacct", "echo 'JobID|State|NodeList'\nfor i in 0 1 2 3; do echo \"4242_$i|OUT_OF_MEMORY|node7\"; done")
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    code, _, err = invoke(["sweep", *GRID, "--executor", "slurm", "--slurm-partition", "gpu", "--slurm-time", "90",
                           "--slurm-gpus", "1", "--slurm-cpus", "8", "--slurm-mem-gb", "32", "--slurm-array", "3",
                           "--slurm-setup", "module load cuda", "--slurm-option", "account=mylab", "--out", str(out)],
                          monkeypatch, capsys)
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB", "#SBATCH --account=mylab",
                 "#SBATCH --array=0-3%3", "#SBATCH --signal=USR2@90", "module load cuda"):
        assert line in script.splitlines(), f"{line!r} not in the sbatch script:\n{script}"
    log = out.resolve() / "slurm" / "4242_0" / "4242_0_0_log.err"
    error = assert_user_error(code, err, out, "4 run(s) failed")
    assert "job 4242_0 ended without finishing its run(s)" in error and str(log) in error, error
    assert "(Slurm state OUT_OF_MEMORY)" in error, error


def _kill_one_job_midway(out: Path, killed: dict) -> None:
    """Wait for a run's first checkpoint, find the job whose log names that run, SIGKILL its task process
    (what a node failure or the OOM killer does)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not killed:
        for checkpoint in (out / "runs" / ".partial").glob("*/checkpoint.pt"):
            run_id = checkpoint.parent.name
            for log in (out / "slurm").glob("*/*_log.err"):
                if run_id not in log.read_text(errors="replace"):
                    continue
                job = log.parent.name  # the local executor's job id is its controller's pid
                children = Path(f"/proc/{job}/task/{job}/children").read_text().split()
                for pid in children:
                    os.kill(int(pid), signal.SIGKILL)
                killed.update(run_id=run_id, job=job, pids=children)
                return
        time.sleep(0.2)


@needs_submitit
@pytest.mark.slow
def test_slurm_local_grid_survives_a_killed_job_and_matches_the_local_executor(tmp_path):
    env = {**os.environ, "COLUMNS": "200", "LIVAR_BENCH_THREADS": "1", "PYTHONPATH": str(REPO)}
    slurm = [sys.executable, "-m", "livar_bench", "sweep", *GRID, "--executor", "slurm", "--slurm-cluster", "local",
             "--slurm-array", "2", "--slurm-time", "20", "--out", str(tmp_path / "slurm")]
    killed: dict = {}
    watcher = threading.Thread(target=_kill_one_job_midway, args=(tmp_path / "slurm", killed), daemon=True)
    watcher.start()
    first = subprocess.run(slurm, capture_output=True, text=True, env=env, timeout=900)
    watcher.join(1)
    assert killed, first.stderr
    assert first.returncode == 2, first.stderr
    assert "1 run(s) failed" in first.stderr and f"job {killed['job']} ended without finishing" in first.stderr
    assert "3 trained" in first.stderr
    again = subprocess.run(slurm, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0, again.stderr
    assert "1 trained, 3 already done" in again.stderr
    logs = "".join(p.read_text() for p in (tmp_path / "slurm" / "slurm").glob("*/*_log.err"))
    assert f"run {killed['run_id']}: resuming after round" in logs
    local = subprocess.run([sys.executable, "-m", "livar_bench", "sweep", *GRID, "--out", str(tmp_path / "local")],
                           capture_output=True, text=True, env=env, timeout=900)
    assert local.returncode == 0, local.stderr
    assert science(tmp_path / "slurm").equals(science(tmp_path / "local"))
    tables = [subprocess.run([sys.executable, "-m", "livar_bench", "table", "--out", str(tmp_path / name)],
                             capture_output=True, text=True, env=env, check=True).stdout for name in ("slurm", "local")]
    assert tables[0] == tables[1] and "FedProx" in tables[0]
