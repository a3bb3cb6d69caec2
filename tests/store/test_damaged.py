"""Damaged state files: every file the harness reads back, when truncated, emptied or overwritten, costs
one warning line and a recomputation (or is reported and rerun), never a traceback, and never stops the
rest of a sweep; results then equal an undamaged sweep's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from livar_bench.data.base import ImageSplit
from livar_bench.data.cache import load_or_build
from livar_bench.device import resolve_device
from livar_bench.experiments import sweep as sw
from livar_bench.experiments.executors import LocalExecutor
from livar_bench.federation.round1_cache import Round1Cache
from livar_bench.methods import parse_method
from livar_bench.store import RunStore
from tests._cli import invoke
from tests._faults import Injected, Recorder
from tests._results import science

MICRO = dict(backbone="livar_micro_vit", num_clients=2, rounds=2, local_epochs=1, batch_size=32, lr=3e-3,
             lora_rank=2, lora_alpha=2.0, device="cpu", dataset="synthetic", alpha=0.5)
SPECS = sw.expand(sw.parse_sweep({"grid": {"methods": ["fedavg", "livar"], "seeds": [0]}, "base": MICRO}))


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x80\x02garbage" * 50)
    elif how == "flipped":  # one byte in the middle: only a checksum notices
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])




@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """An uninterrupted sweep, and one crashed in its first run after round 1 (checkpoint + round-1 cache)."""
    ref = tmp_path_factory.mktemp("ref")
    LocalExecutor().run(SPECS, ref)
    crashed = tmp_path_factory.mktemp("crashed")
    with pytest.raises(Injected):
        LocalExecutor().run(SPECS, crashed, on_event=Recorder(crash_at=(0, 1)))
    return ref, crashed


def warnings_of(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("warning:")]


def round1_file(out: Path) -> Path:
    return Round1Cache.for_run(out, SPECS[0], parse_method(SPECS[0].method), resolve_device("cpu")).path


SLOW = pytest.mark.slow  # the default suite keeps one case of each kind of damage and file


@pytest.mark.parametrize("which,how", [pytest.param("checkpoint", "empty", marks=SLOW),
                                       pytest.param("checkpoint", "truncated", marks=SLOW),
                                       ("checkpoint", "garbage"), ("checkpoint", "flipped"), ("round1", "garbage"),
                                       pytest.param("round1", "flipped", marks=SLOW)])
def test_damaged_checkpoint_or_round1_cache_is_set_aside_and_recomputed(folders, tmp_path, capsys, which, how):
    ref, crashed = folders
    out = tmp_path / "out"
    shutil.copytree(crashed, out)
    path = (RunStore(out).partial_dir(SPECS[0].run_id) / "checkpoint.pt") if which == "checkpoint" else round1_file(out)
    assert path.is_file()
    damage(path, how)
    if which == "checkpoint":  # status reads it too, without a traceback and without touching it
        assert RunStore(out).state(SPECS[0].run_id)[0] == "interrupted"
    capsys.readouterr()
    result = LocalExecutor().run(SPECS, out)
    warnings = warnings_of(capsys.readouterr().err)
    assert len(warnings) == 1 and str(path) in warnings[0], warnings
    kept = RunStore(out).run_dir(SPECS[0].run_id) if which == "checkpoint" else path.parent  # moved with its run
    assert (kept / (path.name + ".damaged")).is_file()
    assert result.trained == 2 and not result.failures
    pd.testing.assert_frame_equal(science(out), science(ref))


@pytest.mark.parametrize("name,how", [("metrics.csv", "truncated"), pytest.param("spec.json", "garbage", marks=SLOW),
                                      ("DONE", "garbage"), pytest.param("partition.json", "empty", marks=SLOW)])
def test_damaged_finished_run_is_reported_then_rerun(folders, tmp_path, monkeypatch, capsys, name, how):
    ref, _ = folders
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    victim = SPECS[1].run_id
    damage(out / "runs" / victim / name, how)
    sw.write_manifest(sw.SweepConfig(name="t"), SPECS, out)
    code, stdout, err = invoke(["status", "--out", str(out)], monkeypatch, capsys)
    assert code == 0 and "Traceback" not in err
    row = next(line for line in stdout.splitlines() if "│ t " in line)
    assert [c.strip() for c in row.split("│")[3:9]] == ["2", "1", "0", "0", "0", "1"]  # done .. damaged
    code, _, err = invoke(["table", "--out", str(out)], monkeypatch, capsys)
    assert code == 0
    warnings = warnings_of(err)
    assert len(warnings) == 1 and victim in warnings[0] and "damaged" in warnings[0]
    result = LocalExecutor().run(SPECS, out)
    assert result.trained == 1 and result.outcomes[1].run_id == victim
    assert len(warnings_of(capsys.readouterr().err)) == 1
    assert (out / "runs" / ".damaged" / victim).is_dir()
    pd.testing.assert_frame_equal(science(out), science(ref))


@pytest.mark.parametrize("how", [pytest.param("empty", marks=SLOW), "flipped"])
def test_damaged_partition_file_is_redrawn(folders, tmp_path, capsys, how):
    ref, _ = folders
    out = tmp_path / "out"
    path = out / "partitions" / f"{SPECS[0].partition_id}.json"
    LocalExecutor().run(SPECS[:1], out)
    damage(path, how)
    capsys.readouterr()
    result = LocalExecutor().run(SPECS, out)
    warnings = warnings_of(capsys.readouterr().err)
    assert len(warnings) == 1 and str(path) in warnings[0]
    assert result.trained == 1 and path.is_file()
    pd.testing.assert_frame_equal(science(out), science(ref))


@pytest.mark.parametrize("how", ["empty", "garbage"])
def test_damaged_sweep_record_is_set_aside_by_status(folders, tmp_path, monkeypatch, capsys, how):
    ref, _ = folders
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    good = sw.write_manifest(sw.SweepConfig(name="good"), SPECS, out)
    bad = sw.write_manifest(sw.SweepConfig(name="bad"), SPECS[:1], out)
    damage(bad, how)
    code, stdout, err = invoke(["status", "--out", str(out)], monkeypatch, capsys)
    assert code == 0
    warnings = warnings_of(err)
    assert len(warnings) == 1 and str(bad) in warnings[0]
    assert "│ good " in stdout and good.is_file() and bad.with_name(bad.name + ".damaged").is_file()


@pytest.mark.parametrize("how", ["empty", "truncated", "garbage", "wrong"])
def test_damaged_image_cache_is_rebuilt(tmp_path, capsys, how):
    images = torch.randint(0, 255, (7, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(7) % 3
    built = []

    def build():
        built.append(1)
        return ImageSplit(images.clone(), labels.clone())

    path = tmp_path / "cache" / "x-train-0123.pt"
    load_or_build(path, build)
    assert len(built) == 1
    again = load_or_build(path, build)
    assert len(built) == 1 and torch.equal(again.images, images)
    if how == "wrong":
        torch.save({"images": torch.zeros(7, 3, 8, 8), "labels": labels}, path)  # float images
    else:
        damage(path, how)
    capsys.readouterr()
    split = load_or_build(path, build)
    warnings = warnings_of(capsys.readouterr().err)
    assert len(warnings) == 1 and str(path) in warnings[0]
    assert len(built) == 2 and torch.equal(split.images, images) and torch.equal(split.labels, labels)
    assert torch.equal(load_or_build(path, build).images, images) and len(built) == 2  # the rebuilt file is good


def test_one_broken_run_never_stops_the_rest(folders, tmp_path):
    ref, _ = folders

    def broken(event, **info):
        if event == "round" and info["round"] == 1 and not broken.fired:
            broken.fired = True
            raise ZeroDivisionError("a bug in one run")

    broken.fired = False
    result = LocalExecutor().run(SPECS, tmp_path, on_event=broken)
    assert [r for r, _ in result.failures] == [SPECS[0].run_id]
    assert "unexpected ZeroDivisionError: a bug in one run" in result.failures[0][1]
    assert RunStore(tmp_path).done_ids() == [SPECS[1].run_id]
    again = LocalExecutor().run(SPECS, tmp_path)  # resumes the broken run from its checkpoint
    assert again.trained == 1 and not again.failures
    pd.testing.assert_frame_equal(science(tmp_path), science(ref))


def test_checkpoint_from_before_digests_still_resumes(folders, tmp_path, capsys):
    """A plain torch checkpoint (what earlier versions wrote) is resumed, not set aside."""
    from livar_bench.store import load_tensors

    ref, crashed = folders
    out = tmp_path / "out"
    shutil.copytree(crashed, out)
    path = RunStore(out).partial_dir(SPECS[0].run_id) / "checkpoint.pt"
    torch.save(load_tensors(path), path)  # same payload, no header
    capsys.readouterr()
    rec = Recorder()
    LocalExecutor().run(SPECS, out, on_event=rec)
    assert [i["round"] for i in rec.names("resume")] == [1]
    assert "warning:" not in capsys.readouterr().err
    pd.testing.assert_frame_equal(science(out), science(ref))
