"""A full disk at any write of a sweep (sweep record, partition, spec, checkpoint, round-1 cache, metrics,
DONE, tables): one error line naming the folder, exit 2, no temporary file left, finished runs and the
last good checkpoint intact, and rerunning the same command once space is free gives the results of an
uninterrupted sweep."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pandas as pd
import pytest

from livar_bench.store import TEMP_TAG, RunStore, load_tensors
from livar_bench.store import atomic as st
from tests._cli import invoke
from tests._results import science

SWEEP = ["sweep", "--datasets", "synthetic", "--methods", "fedavg,livar", "--seeds", "0", "--alphas", "0.5",
         "--backbone", "livar_micro_vit", "--clients", "2", "--rounds", "2", "--epochs", "1", "--lora-rank", "2",
         "--lora-alpha", "2", "--batch-size", "32", "--device", "cpu"]
TABLE = ["table"]


class _Failing:
    """A file whose writes fail with ENOSPC after ``room`` bytes (what a full disk does)."""

    def __init__(self, fh, room: int) -> None:
        self.fh, self.room = fh, room

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.fh.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()


class Disk:
    """Records every file the harness writes; the ``fail_at``-th write (0-based) hits a full disk."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.targets: list[Path] = []

    def __call__(self, tmp: Path):
        target = tmp.with_name(tmp.name[1:].rpartition(TEMP_TAG)[0])
        self.targets.append(target)
        fh = open(tmp, "wb")  # noqa: SIM115
        return _Failing(fh, 10) if len(self.targets) - 1 == self.fail_at else fh


def kind(path: Path) -> str:
    if path.parent.name == "sweeps":
        return "sweep record"
    if path.parent.name == "partitions":
        return "partition"
    if path.parent.name == "round1":
        return "round-1 cache"
    if path.parent.name == "tables":
        return "tables"
    return path.name




@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted sweep and table, with the list of every file written, in order."""
    out = tmp_path_factory.mktemp("ref")
    disk = Disk()
    mp = pytest.MonkeyPatch()
    mp.setattr(st, "_open_temp", disk)
    try:
        for args in (SWEEP, TABLE):
            code = _invoke_plain([*args, "--out", str(out)], mp)
            assert code == 0
    finally:
        mp.undo()
    return out, disk.targets


def _invoke_plain(args, mp) -> int:
    import sys

    from livar_bench.cli import main

    mp.setattr(sys, "argv", ["livar-bench", *args])
    try:
        main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


def _first_of_each_kind(targets: list[Path]) -> list[int]:
    seen: dict[str, int] = {}
    for i, path in enumerate(targets):
        seen.setdefault(kind(path), i)
    return sorted(seen.values())


def test_every_kind_of_write_is_exercised(reference):
    _, targets = reference
    kinds = {kind(p) for p in targets}
    assert kinds == set(KINDS)


def _check_full_disk_at(index: int, reference, tmp_path, monkeypatch, capsys) -> None:
    ref, targets = reference
    out = tmp_path / "out"
    target = targets[index]
    in_table = kind(target) in ("tables", "tidy.pkl", "verified.pkl")
    if in_table:  # the sweep finished; the table command hits the full disk
        shutil.copytree(ref, out)
        shutil.rmtree(out / "tables")
        (out / "cache" / "tidy.pkl").unlink(missing_ok=True)
        (out / "cache" / "verified.pkl").unlink(missing_ok=True)
        args, first = TABLE, next(i for i, p in enumerate(targets) if kind(p) in ("tables", "tidy.pkl"))
        index -= first
    else:
        args = SWEEP
    disk = Disk(fail_at=index)
    monkeypatch.setattr(st, "_open_temp", disk)
    code, _, err = invoke([*args, "--out", str(out)], monkeypatch, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space" in errors[0] and str(target.parent).replace(str(ref), str(out)) in errors[0]
    assert "rerun the same command" in errors[0]
    leftovers = [p for p in out.rglob("*") if TEMP_TAG in p.name]
    assert not leftovers
    store = RunStore(out)
    for done in (out / "runs").glob("*/DONE"):
        assert store.problem(done.parent.name) is None  # finished runs intact
    for checkpoint in (out / "runs" / ".partial").glob("*/checkpoint.pt"):
        assert isinstance(load_tensors(checkpoint), dict)  # the last good checkpoint intact
    monkeypatch.setattr(st, "_open_temp", Disk())  # space freed
    code, _, err = invoke([*args, "--out", str(out)], monkeypatch, capsys)
    assert code == 0, err
    assert "warning:" not in err
    pd.testing.assert_frame_equal(science(out), science(ref))
    if in_table:
        assert sorted(p.name for p in (out / "tables").iterdir()) == sorted(p.name for p in (ref / "tables").iterdir())
        assert (out / "cache" / "tidy.pkl").is_file() and (out / "cache" / "verified.pkl").is_file()


KINDS = ["sweep record", "partition", "spec.json", "env.json", "partition.json", "partition.png", "round-1 cache",
         "checkpoint.pt", "metrics.csv", "DONE", "tables", "tidy.pkl", "verified.pkl"]
# test_full_disk_at_every_write
COVERED_BY_SLOW = {"sweep record", "partition", "env.json", "partition.json", "partition.png"}


@pytest.mark.parametrize("what", [pytest.param(k, marks=pytest.mark.slow) if k in COVERED_BY_SLOW else k
                                  for k in KINDS])
def test_full_disk_at_each_kind_of_write(what, reference, tmp_path, monkeypatch, capsys):
    index = next(i for i, p in enumerate(reference[1]) if kind(p) == what)
    _check_full_disk_at(index, reference, tmp_path, monkeypatch, capsys)


@pytest.mark.slow
def test_full_disk_at_every_write(reference, tmp_path, monkeypatch, capsys):
    for index in range(len(reference[1])):
        _check_full_disk_at(index, reference, tmp_path / str(index), monkeypatch, capsys)



def test_temporary_files_of_dead_processes_are_swept_at_start(tmp_path):
    import subprocess
    import sys
    import time

    from livar_bench.store import HOST, sweep_temp_files

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = {
        "dead": f".x.pt{TEMP_TAG}{HOST}.{dead.pid}",
        "alive": f".y.pt{TEMP_TAG}{HOST}.{__import__('os').getpid()}",
        "other-host-new": f".z.pt{TEMP_TAG}elsewhere.{dead.pid}",
        "other-host-old": f".w.pt{TEMP_TAG}elsewhere.{dead.pid}",
    }
    folders = {"dead": tmp_path / "cache" / "round1", "alive": tmp_path / "runs" / ".partial" / "abc",
               "other-host-new": tmp_path / "partitions", "other-host-old": tmp_path / "sweeps"}
    for key, name in names.items():
        folders[key].mkdir(parents=True, exist_ok=True)
        (folders[key] / name).write_bytes(b"half written")
    old = time.time() - 2 * 86400
    __import__("os").utime(folders["other-host-old"] / names["other-host-old"], (old, old))
    removed = {p.name for p in sweep_temp_files(tmp_path)}
    assert removed == {names["dead"], names["other-host-old"]}
    assert (folders["alive"] / names["alive"]).exists() and (folders["other-host-new"] / names["other-host-new"]).exists()
