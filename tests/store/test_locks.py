"""Run locks: flock locks die with their process, any leftover lock file is taken over, concurrent
takeovers never give two holders, leases expire and are renewed (with a fake clock), and a sweep's
summary never counts a run left to another process as done."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from livar_bench.experiments import sweep as sw
from livar_bench.experiments.executors import LocalExecutor
from livar_bench.store import FileLock, LeaseLock, RunStore

REPO = Path(__file__).resolve().parents[2]
MICRO = dict(backbone="livar_micro_vit", num_clients=2, rounds=1, local_epochs=1, batch_size=32, lr=3e-3,
             lora_rank=2, lora_alpha=2.0, device="cpu", dataset="synthetic")


@pytest.mark.parametrize("content", [b"", b"\x00\xff garbage \x13", b"1@" + os.uname().nodename.encode(),
                                     f"{os.getpid()}@{os.uname().nodename}".encode(), b"99999999@elsewhere"])
def test_leftover_lock_file_is_taken_over(tmp_path, content):
    """Empty, garbage, a live but unrelated pid (a reused pid: here pid 1 and this very process), another
    host: the file's content never blocks a run; only a held lock does."""
    store = RunStore(tmp_path)
    locks = tmp_path / "runs" / ".locks"
    locks.mkdir(parents=True)
    (locks / "abc.lock").write_bytes(content)
    with store.lock("abc") as held:
        assert held
        assert store.running("abc")
    assert not (locks / "abc.lock").exists()
    assert not locks.exists()  # an idle .locks folder is removed


def test_lock_dies_with_its_process(tmp_path):
    code = ("import sys, time; from livar_bench.store import RunStore\n"
            "with RunStore(sys.argv[1]).lock('abc') as held:\n"
            "    print(held, flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "True"
        store = RunStore(tmp_path)
        assert store.running("abc")
        with store.lock("abc") as held:
            assert not held  # a live holder keeps it
        proc.send_signal(signal.SIGKILL)  # no chance to clean up: the file stays, the lock goes
        proc.wait(timeout=10)
        assert (tmp_path / "runs" / ".locks" / "abc.lock").exists()
        assert not store.running("abc")
        with store.lock("abc") as held:
            assert held
    finally:
        proc.kill()
        proc.wait()


def _contender(path: str, start, rounds: int, errors, taken) -> None:
    inside = Path(path + ".inside")
    for _ in range(rounds):
        start.wait()
        lock = FileLock(Path(path))
        if lock.acquire():
            with taken.get_lock():
                taken.value += 1
            try:
                fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # a second holder would fail here
                os.close(fd)
                time.sleep(0.001)
                inside.unlink()
            except FileExistsError:
                errors.value += 1
            finally:
                lock.release()
        start.wait()
        Path(path).write_bytes(b"stale garbage")  # every round starts from a leftover file


def test_concurrent_takeover_of_a_stale_lock_has_one_holder(tmp_path):
    ctx = multiprocessing.get_context("fork")
    path = tmp_path / "runs" / ".locks" / "abc.lock"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"stale garbage")
    workers, rounds = 4, 60
    start = ctx.Barrier(workers)
    errors, taken = ctx.Value("i", 0), ctx.Value("i", 0)
    procs = [ctx.Process(target=_contender, args=(str(path), start, rounds, errors, taken)) for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert errors.value == 0  # never two holders at once
    assert taken.value >= rounds  # and the leftover file never kept everyone out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lease_expires_unless_renewed(tmp_path):
    clock = Clock()
    path = tmp_path / "abc.lock"
    owner = LeaseLock(path, ttl=60, clock=clock)
    assert owner.acquire()
    other = LeaseLock(path, ttl=60, clock=clock)
    clock.now += 59
    assert not other.acquire()  # still within the lease
    assert owner.renew()  # the heartbeat: another 60 s from now
    clock.now += 59
    assert not other.acquire()
    clock.now += 2  # the owner stalled past its lease
    assert other.acquire()
    assert json.loads(path.read_text())["token"] == other.token
    assert not owner.renew()  # the old owner learns it lost the lease
    owner.release()
    assert path.exists()  # and does not remove the new owner's lease
    other.release()
    assert not path.exists()


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"token": 3}', b"12345@otherhost"])
def test_unreadable_lease_is_taken_over(tmp_path, content):
    path = tmp_path / "abc.lock"
    path.write_bytes(content)
    lease = LeaseLock(path, ttl=60, clock=Clock())
    assert lease.acquire()
    assert LeaseLock.read(path)["token"] == lease.token


def test_two_takers_of_one_expired_lease(tmp_path):
    """The second taker moves away the first taker's fresh lease, notices, and puts it back."""
    clock = Clock()
    path = tmp_path / "abc.lock"
    dead = LeaseLock(path, ttl=10, clock=clock)
    assert dead.acquire()
    clock.now += 11
    first, second = LeaseLock(path, ttl=10, clock=clock), LeaseLock(path, ttl=10, clock=clock)
    seen = path.read_bytes()
    real_read = Path.read_bytes

    def stale_view(self):  # the second taker read the expired lease just before the first took over
        return seen if self == path and not stale_view.used and not setattr(stale_view, "used", True) else real_read(self)

    stale_view.used = False
    assert first.acquire()
    Path.read_bytes = stale_view
    try:
        assert not second.acquire()
    finally:
        Path.read_bytes = real_read
    assert LeaseLock.read(path)["token"] == first.token


def test_lease_mode_runs_a_sweep_and_heartbeat_renews(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVAR_BENCH_LOCKS", "lease")
    monkeypatch.setenv("LIVAR_BENCH_LEASE_S", "0.2")  # heartbeat every 0.05 s
    specs = sw.expand(sw.parse_sweep({"grid": {"methods": ["fedavg"], "seeds": [0]}, "base": MICRO}))
    seen = []

    path = tmp_path / "runs" / ".locks" / f"{specs[0].run_id}.lock"

    def on_event(event, **info):
        # The run is blocked here, inside its round loop: only the heartbeat thread can renew its lease. Wait
        # (by event order, not for a fixed time) until it has renewed it twice, with the same owner.
        if event == "round":
            first = LeaseLock.read(path)
            renewals, last = 0, first["expires"]
            for _ in range(30000):  # at most ~30 s; two renewals take about 0.1 s
                lease = LeaseLock.read(path)
                if lease is not None and lease["expires"] > last:
                    renewals, last = renewals + 1, lease["expires"]
                    seen.append(lease["token"] == first["token"])
                if renewals == 2:
                    break
                time.sleep(0.001)

    result = LocalExecutor().run(specs, tmp_path, on_event=on_event)
    assert result.trained == 1 and seen == [True, True]


def test_summary_never_counts_a_locked_run_as_done(tmp_path, monkeypatch, capsys):
    from tests._cli import invoke

    args = ["sweep", "--datasets", "synthetic", "--methods", "fedavg", "--seeds", "0,1", "--backbone",
            "livar_micro_vit", "--clients", "2", "--rounds", "1", "--epochs", "1", "--lora-rank", "2",
            "--lora-alpha", "2", "--device", "cpu", "--out", str(tmp_path)]
    code, out, _ = invoke([*args, "--dry-run"], monkeypatch, capsys)
    first = out.split()[0]
    with RunStore(tmp_path).lock(first) as held:
        assert held
        code, out, err = invoke(args, monkeypatch, capsys)
    assert code == 0, err
    assert "1 trained, 0 already done, 0 failed, 1 left to another process" in err


def test_a_stalled_holder_that_lost_its_lease_leaves_the_run_and_goes_on(tmp_path, monkeypatch):
    """Process A stalls past its lease in round 1 of run 1 (a fake clock jumps); process B takes run 1 over and
    finishes it; A resumes and stops work on run 1 with one warning line (it wrote into B's partial folder, which
    B's commit removed), then runs the rest of its sweep: no failure, every run done by someone."""
    from livar_bench.federation import run_federation
    from livar_bench.store import runs as runs_module

    clock = Clock()

    class FakeClockLease(LeaseLock):
        def __init__(self, path, ttl=None, clock_=None):
            super().__init__(path, ttl=60, clock=clock)

    monkeypatch.setenv("LIVAR_BENCH_LOCKS", "lease")
    monkeypatch.setattr(runs_module, "LeaseLock", FakeClockLease)
    specs = sw.expand(sw.parse_sweep({"grid": {"methods": ["fedavg"], "seeds": [0, 1]}, "base": {**MICRO, "rounds": 2}}))
    events, taken_over = [], []

    def process_a(event, **info):
        events.append((event, info))
        if event == "round" and info["round"] == 1 and not taken_over:
            clock.now += 61  # A stalls past its 60 s lease ...
            taken_over.append(run_federation(specs[0], tmp_path))  # ... and B takes run 1 over and finishes it

    result = LocalExecutor(share_round1=False).run(specs, tmp_path, on_event=process_a)
    assert result.failures == ()
    store = RunStore(tmp_path)
    assert all(store.is_done(s.run_id) for s in specs)
    assert not taken_over[0].skipped and [o.skipped for o in result.outcomes] == [True, False]
    warnings = [info["message"] for event, info in events if event == "warning"]
    assert warnings == [f"run {specs[0].run_id}: another process took this run over while this one stalled past "
                        "its lease; left to that process"]
    rounds_of_a = [info["round"] for event, info in events if event == "round"]
    assert rounds_of_a == [1, 1, 2]  # run 1: round 1 only (round 2 was B's); run 2: both rounds
    assert not (tmp_path / "runs" / ".partial").exists()  # A left nothing of run 1 behind


def test_a_lost_lease_is_seen_by_the_holder_without_a_warning_per_beat(tmp_path, capsys):
    clock = Clock()
    path = tmp_path / "x.lock"
    owner, other = LeaseLock(path, ttl=60, clock=clock), LeaseLock(path, ttl=60, clock=clock)
    assert owner.acquire() and owner.still_held()
    clock.now += 61
    assert other.acquire()
    assert not owner.still_held() and owner.lost and not owner.renew()
    assert other.still_held()
    assert capsys.readouterr().err == ""  # the round loop says it once, as a warning event
    owner.release()
    assert LeaseLock.read(path)["token"] == other.token


def _lease_contender(path: str, start, rounds: int, errors, taken) -> None:
    inside = Path(path + ".inside")
    stale = json.dumps({"token": "stale", "owner": "1@elsewhere", "expires": 0.0}).encode()
    for _ in range(rounds):
        start.wait()
        lock = LeaseLock(Path(path), ttl=600)
        if lock.acquire():
            with taken.get_lock():
                taken.value += 1
            try:
                fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # a second holder would fail here
                os.close(fd)
                time.sleep(0.001)
                inside.unlink()
            except FileExistsError:
                errors.value += 1
            finally:
                lock.release()
        start.wait()
        Path(path).write_bytes(stale)  # every round starts from an expired lease of a dead holder


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["flock", "lease"])
def test_two_processes_taking_over_a_stale_lock_500_times_never_both_hold_it(tmp_path, mode):
    ctx = multiprocessing.get_context("fork")
    path = tmp_path / "runs" / ".locks" / "abc.lock"
    path.parent.mkdir(parents=True)
    stale = b"stale garbage" if mode == "flock" else json.dumps({"token": "stale", "expires": 0.0}).encode()
    path.write_bytes(stale)
    rounds = 500
    start = ctx.Barrier(2)
    errors, taken = ctx.Value("i", 0), ctx.Value("i", 0)
    target = _contender if mode == "flock" else _lease_contender
    procs = [ctx.Process(target=target, args=(str(path), start, rounds, errors, taken)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode == 0
    assert errors.value == 0  # never two holders at once
    assert taken.value >= rounds  # and the stale lock never kept both out
