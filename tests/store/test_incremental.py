"""Reading big results folders incrementally: the tidy rows and the verification of finished runs are
cached with each run's file signatures; only new or changed runs are read again, and the result always
equals a read from scratch."""

from __future__ import annotations

import pandas as pd
import pytest

from livar_bench import reporting as rp
from livar_bench import store as st
from livar_bench.config import make_spec
from livar_bench.federation.run_folder import RunFolder, tidy_rows
from livar_bench.reporting import tidy as rp_collect
from livar_bench.store import RunStore
from livar_bench.store import runs as st_runs


def write_run(out, seed: int, acc: float, replace: bool = False) -> str:
    """One finished run written with the harness's own writer (files, DONE digests, atomic move)."""
    spec = make_spec({"dataset": "digits", "method": "fedavg", "seed": seed, "rounds": 2})
    folder = RunFolder(RunStore(out), spec.run_id)
    folder.write_records(spec, {}, {"host": "test"}, {"partition_id": spec.partition_id})
    folder.write_metrics(pd.DataFrame([row for r in range(3) for row in tidy_rows(spec, r, "test", {"acc": acc * r})]))
    folder.commit(replace=replace)
    return spec.run_id


def from_scratch(out) -> pd.DataFrame:
    (out / "cache" / "tidy.pkl").unlink(missing_ok=True)
    (out / "cache" / "verified.pkl").unlink(missing_ok=True)
    return rp.collect(out)


class Counting:
    def __init__(self, monkeypatch) -> None:
        self.reads, self.hashes = 0, 0
        read, sha = rp_collect.read_metrics, st_runs._sha256

        def counting_read(paths):
            self.reads += len(paths)
            return read(paths)

        def counting_sha(path):
            self.hashes += 1
            return sha(path)

        monkeypatch.setattr(rp_collect, "read_metrics", counting_read)
        monkeypatch.setattr(st_runs, "_sha256", counting_sha)


@pytest.fixture
def folder(tmp_path):
    ids = [write_run(tmp_path, seed, 0.1 + seed / 100) for seed in range(5)]
    return tmp_path, ids


def test_second_read_uses_the_cache(folder, monkeypatch):
    out, ids = folder
    first = rp.collect(out)
    counting = Counting(monkeypatch)
    again = rp.collect(out)
    assert counting.reads == 0 and counting.hashes == 0  # only stat() calls
    pd.testing.assert_frame_equal(again, first)
    pd.testing.assert_frame_equal(first, from_scratch(out))
    assert sorted(first["run_id"].unique()) == sorted(ids)


def test_new_and_rerun_runs_are_read_and_only_they(folder, monkeypatch):
    out, ids = folder
    rp.collect(out)
    new = write_run(out, 7, 0.3)
    rerun = write_run(out, 2, 0.9, replace=True)  # a forced rerun: new files, new DONE
    counting = Counting(monkeypatch)
    tidy = rp.collect(out)
    assert counting.reads == 2 and counting.hashes == 2 * len(st.RUN_FILES)
    assert set(tidy["run_id"]) == {*ids, new}
    last = tidy[(tidy["run_id"] == rerun) & (tidy["round"] == 2)]["value"].item()
    assert last == pytest.approx(1.8)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(tidy, from_scratch(out))


def test_a_run_changed_behind_its_done_marker_is_left_out(folder, capsys):
    out, ids = folder
    rp.collect(out)
    victim = ids[3]
    path = out / "runs" / victim / "metrics.csv"
    path.write_text(path.read_text().replace("0.13", "0.99"))  # same DONE, different numbers
    tidy = rp.collect(out)
    assert victim not in set(tidy["run_id"]) and len(set(tidy["run_id"])) == 4
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and victim in err and "metrics.csv changed" in err
    assert RunStore(out).state(victim)[0] == "damaged"


@pytest.mark.parametrize("name", ["tidy.pkl", "verified.pkl"])
def test_a_damaged_cache_is_set_aside(folder, capsys, name):
    out, _ = folder
    first = rp.collect(out)
    (out / "cache" / name).write_bytes(b"garbage")
    capsys.readouterr()
    pd.testing.assert_frame_equal(rp.collect(out), first)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and name in err
    assert (out / "cache" / f"{name}.damaged").is_file()
