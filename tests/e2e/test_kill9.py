"""kill -9 at random moments of a small sweep, then a rerun: the tables equal an uninterrupted sweep's,
no run is duplicated and no temporary file is left (slow: each trial starts fresh processes)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from livar_bench.store import TEMP_TAG
from tests._results import science

REPO = Path(__file__).resolve().parents[2]
SWEEP = ["sweep", "--datasets", "synthetic", "--methods", "fedavg,livar", "--seeds", "0,1", "--alphas", "0.5",
         "--backbone", "livar_micro_vit", "--clients", "3", "--rounds", "3", "--epochs", "1", "--lora-rank", "2",
         "--lora-alpha", "2", "--batch-size", "32", "--device", "cpu"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "LIVAR_BENCH_THREADS": "1", "LIVAR_BENCH_FSYNC": "0"}
CODE = "from livar_bench.cli import main; main()"




def sweep(out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CODE, *SWEEP, "--out", str(out)], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_kill_9_at_random_moments_then_rerun_equals_uninterrupted(tmp_path):
    ref = tmp_path / "ref"
    start = time.perf_counter()
    proc = sweep(ref)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    duration = time.perf_counter() - start
    expected = science(ref)
    rng = random.Random(15)
    for trial in range(3):
        out = tmp_path / f"trial{trial}"
        for _ in range(2):  # two kills per trial, the second one possibly during the rerun of the first
            proc = sweep(out)
            time.sleep(rng.uniform(0.3, 1.0) * duration)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        proc = sweep(out)
        assert proc.wait(timeout=600) == 0, proc.stderr.read()
        pd.testing.assert_frame_equal(science(out), expected)
        assert not [p for p in out.rglob("*") if TEMP_TAG in p.name]
        assert len(list((out / "runs").glob("*/DONE"))) == 4
