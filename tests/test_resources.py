"""Threads from the cores a process may use, the workers sharing them and the machine's load."""

from __future__ import annotations

import json
import os

import pytest
import torch

from livar_bench import resources as rs
from livar_bench.config import make_spec
from livar_bench.errors import BenchError
from livar_bench.federation import run_federation


@pytest.fixture
def eight_cores(monkeypatch):
    monkeypatch.delenv("LIVAR_BENCH_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(rs, "_cgroup_cpus", lambda: None)


@pytest.mark.parametrize("workers,busy,expected", [
    (1, 0.0, 8), (2, 0.0, 4), (3, 0.0, 2), (8, 0.0, 1), (20, 0.0, 1),  # the cores shared among workers
    (1, 6.0, 2), (2, 6.0, 2), (1, 7.6, 1), (1, 12.0, 1), (2, 3.4, 4), (1, 2.5, 6),  # capped by idle cores
])
def test_thread_count(eight_cores, workers, busy, expected):
    assert rs.thread_count(workers, busy=busy) == expected


def test_cgroup_quota_and_affinity_cap_the_cores(eight_cores, monkeypatch):
    monkeypatch.setattr(rs, "_cgroup_cpus", lambda: 1.5)
    assert rs.available_cpus() == 1 and rs.thread_count(1, busy=0.0) == 1
    monkeypatch.setattr(rs, "_cgroup_cpus", lambda: 3.0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert rs.available_cpus() == 2


def test_override_and_bad_override(eight_cores, monkeypatch):
    monkeypatch.setenv("LIVAR_BENCH_THREADS", "3")
    assert rs.thread_count(4, busy=7.0) == 3
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv("LIVAR_BENCH_THREADS", bad)
        with pytest.raises(BenchError, match="LIVAR_BENCH_THREADS"):
            rs.thread_count()


def test_env_json_records_threads(tmp_path, tiny_spec_values):
    spec = make_spec({**tiny_spec_values, "rounds": 1})
    outcome = run_federation(spec, tmp_path)
    env = json.loads((outcome.run_dir / "env.json").read_text())
    assert env["torch_threads"] == torch.get_num_threads()
    assert env["cpus_available"] == rs.available_cpus() >= 1
