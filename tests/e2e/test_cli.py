"""The command line: a smoke run, listings, and every kind of bad input ending in exit code 2 and one line.

Commands run in-process through the real console entry point (``livar_bench.cli.main``, which turns a
``BenchError`` into exit code 2); one test runs the installed ``livar-bench`` script in a subprocess to
check the same end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests._cli import QUICK, assert_user_error, invoke, run_folders


def test_run_smoke_then_skip(tmp_path, monkeypatch, capsys):
    args = ["run", "--dataset", "digits", "--method", "fedavg", "--alpha", "0.5", "--seed", "0", "--clients", "4",
            "--rounds", "2", *QUICK[2:], "--out", str(tmp_path)]
    code, out, err = invoke(args, monkeypatch, capsys)
    assert code == 0, err
    assert "fedavg on digits: final test acc" in out
    done = list((tmp_path / "runs").glob("*/DONE"))
    assert len(done) == 1
    run_dir = done[0].parent
    assert {"spec.json", "env.json", "partition.json", "metrics.csv", "DONE"} <= {p.name for p in run_dir.iterdir()}
    assert "round 2: acc" in err  # plain progress lines when stderr is not a terminal

    code, out, err = invoke(args, monkeypatch, capsys)
    assert code == 0 and "already done" in err and run_dir.name in out


@pytest.mark.parametrize("what,needle", [("datasets", "cifar100"), ("methods", "fedavg"), ("backbones", "livar_tiny_vit")])
def test_ls(what, needle, monkeypatch, capsys):
    code, out, err = invoke(["ls", what], monkeypatch, capsys)
    assert code == 0, err
    assert needle in out


def test_ls_datasets_says_how_to_get_them(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line, nothing elided
    code, out, _ = invoke(["ls", "datasets"], monkeypatch, capsys)
    assert code == 0
    for name in ("digits", "synthetic", "cifar100", "imagenet-r", "eurosat", "cub200"):
        assert name in out
    assert "cifar-100-python.tar.gz" in out


def test_ls_unknown_is_a_user_error(tmp_path, monkeypatch, capsys):
    code, _, err = invoke(["ls", "gadgets"], monkeypatch, capsys)
    assert_user_error(code, err, tmp_path, "datasets, methods, backbones or partitioners")


@pytest.mark.parametrize("extra,needles", [
    (["--dataset", "cifar11"], ["unknown dataset", "livar-bench ls datasets"]),
    (["--method", "fedavgg"], ["unknown method", "fedavg"]),
    (["--backbone", "vit_nosuch_model"], ["unknown backbone", "livar-bench ls backbones"]),
    (["--alpha", "0"], ["alpha", "greater than 0"]),
    (["--alpha", "-1"], ["alpha"]),
    (["--clients", "200", "--max-train-samples", "50"], ["fewer --clients"]),
    (["--lr", "1e30"], ["not finite", "lower --lr"]),
    (["--dataset", "cifar100", "--data-root", "/nonexistent"], ["/nonexistent", "cifar-100-python.tar.gz"]),
    (["--device", "tpu"], ["device"]),
])
def test_bad_input_exits_2_with_one_line(extra, needles, tmp_path, monkeypatch, capsys):
    if extra == ["--device", "tpu"] and torch.cuda.is_available():
        pytest.skip("device message differs where CUDA exists")
    args = ["run", *QUICK, "--clients", "3", "--rounds", "1", *extra, "--out", str(tmp_path)]
    code, _, err = invoke(args, monkeypatch, capsys)
    assert_user_error(code, err, tmp_path, *needles)


def _test_vit_file(tmp_path: Path, corrupt: bool = False) -> Path:
    import timm
    from safetensors.torch import save_file

    path = tmp_path / "test_vit.safetensors"
    if corrupt:
        path.write_bytes(b"\x00" * 64)
        return path
    model = timm.create_model("test_vit", pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("case,needles", [
    ("missing", ["does not exist", "--weights"]),
    ("corrupt", ["could not load weights file"]),
    ("directory", ["is not a file"]),
])
def test_bad_weights_exit_2(case, needles, tmp_path, monkeypatch, capsys):
    if case == "missing":
        path = tmp_path / "nowhere.safetensors"
    elif case == "corrupt":
        path = _test_vit_file(tmp_path, corrupt=True)
    else:
        path = tmp_path / "a_folder"
        path.mkdir()
    out = tmp_path / "out"
    args = ["run", *QUICK, "--backbone", "test_vit", "--image-size", "32", "--weights", str(path), "--clients", "3",
            "--rounds", "1", "--out", str(out)]
    code, _, err = invoke(args, monkeypatch, capsys)
    assert_user_error(code, err, out, str(path), *needles)


def test_weights_file_for_timm_backbone_runs(tmp_path, monkeypatch, capsys):
    path = _test_vit_file(tmp_path)
    out = tmp_path / "out"
    args = ["run", *QUICK, "--backbone", "test_vit", "--image-size", "32", "--weights", str(path), "--clients", "3",
            "--rounds", "1", "--out", str(out)]
    code, stdout, err = invoke(args, monkeypatch, capsys)
    assert code == 0, err
    assert "final test acc" in stdout and len(list((out / "runs").glob("*/DONE"))) == 1


def test_pretrained_timm_backbone_offline_says_how_to_get_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["run", *QUICK, "--backbone", "test_vit", "--clients", "3", "--rounds", "1", "--out", str(tmp_path)]
    code, _, err = invoke(args, monkeypatch, capsys)
    assert_user_error(code, err, tmp_path, "test_vit", "--weights", "--no-pretrained")


@pytest.mark.slow  # a fresh interpreter importing torch costs seconds; main() is covered in-process above
@pytest.mark.skipif(shutil.which("livar-bench") is None, reason="console script not installed")
def test_installed_script_user_error_end_to_end(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        ["livar-bench", "run", "--dataset", "cifar100", "--data-root", "/nonexistent", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "cifar-100-python.tar.gz" in lines[0] and "/nonexistent" in lines[0]
    assert run_folders(tmp_path) == []


def test_error_text_with_brackets_prints_literally(tmp_path, monkeypatch, capsys):
    # rich markup would swallow "[hf]" and "[bogus=1]"; the messages must show them as typed
    code, _, err = invoke(["run", "--dataset", f"hf:{tmp_path}/missing", "--out", str(tmp_path)], monkeypatch, capsys)
    assert code == 2 and "livar-bench[hf]" in err
    code, _, err = invoke(["run", "--method", "ties[bogus=1]", "--out", str(tmp_path)], monkeypatch, capsys)
    assert code == 2 and "bogus" in err


def test_weights_are_checked_before_the_dataset_is_read(tmp_path, monkeypatch, capsys):
    args = ["run", "--dataset", "cifar100", "--data-root", str(tmp_path), "--backbone", "vit_tiny_patch16_224",
            "--weights", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "out")]
    code, _, err = invoke(args, monkeypatch, capsys)
    assert_user_error(code, err, tmp_path / "out", "missing.safetensors", "does not exist")


def test_val_fraction_and_pack_options_reach_the_run(tmp_path, monkeypatch, capsys):
    import pandas as pd

    args = ["run", *QUICK, "--clients", "3", "--rounds", "1", "--val-fraction", "0.2", "--pack", "3",
            "--out", str(tmp_path)]
    code, _, err = invoke(args, monkeypatch, capsys)
    assert code == 0, err
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    frame = pd.read_csv(run_dir / "metrics.csv")
    assert set(frame[frame["split"] == "val"]["round"]) == {0, 1}
    spec = json.loads((run_dir / "spec.json").read_text())
    assert spec["val_fraction"] == 0.2 and spec["pack"] == 3


def _method_names() -> list[str]:
    from livar_bench.methods import entries

    return [e.name for e in entries()]


def test_ls_piped_prints_complete_rows_one_per_line(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "40")  # a narrow terminal must not cut or wrap either
    code, out, err = invoke(["ls", "methods"], monkeypatch, capsys)
    assert code == 0, err
    lines = out.strip("\n").split("\n")
    assert lines[0].split("\t") == ["name", "kind", "client signals", "secure aggregation", "hyperparameters",
                                     "paper", "summary"]
    assert [line.split("\t")[0] for line in lines[1:]] == _method_names()  # task_arithmetic in full
    assert all(len(line.split("\t")) == 7 for line in lines)
    secure = {line.split("\t")[0]: line.split("\t")[3] for line in lines[1:]}
    assert secure["fedavg"].startswith("sum: ") and secure["livar"].startswith("individual: ")
    assert secure["ties"].startswith("individual: ") and secure["fedadam"].startswith("sum: ")
    assert any("https://arxiv.org/abs/2212.04089" in line for line in lines)


def test_ls_narrow_terminal_falls_back_to_lines(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = invoke(["ls", "methods"], monkeypatch, capsys)
    assert code == 0 and "\t" in out and "…" not in out


def test_ls_csv_and_json(monkeypatch, capsys):
    import csv
    import io
    import json

    code, out, _ = invoke(["ls", "methods", "--format", "csv"], monkeypatch, capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["name"] for r in rows] == _method_names()
    code, out, _ = invoke(["ls", "methods", "--format", "json"], monkeypatch, capsys)
    items = json.loads(out)
    assert code == 0 and [i["name"] for i in items] == _method_names()
    ties = next(i for i in items if i["name"] == "ties")
    trim = next(h for h in ties["hyperparameters"] if h["name"] == "trim")
    assert trim["default"] == "global" and trim["choices"] == ["global", "tensor"] and trim["help"]
    density = next(h for h in ties["hyperparameters"] if h["name"] == "density")
    assert density["type"] == "float" and density["range"] == "[0, 1]"


def test_ls_bad_format_is_a_user_error(tmp_path, monkeypatch, capsys):
    code, _, err = invoke(["ls", "methods", "--format", "xml"], monkeypatch, capsys)
    assert_user_error(code, err, tmp_path, "--format")


def test_ls_wide_terminal_draws_the_table(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "1000")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = invoke(["ls", "methods"], monkeypatch, capsys)
    assert code == 0 and "\t" not in out and "task_arithmetic" in out and "┃" in out


def test_ls_datasets_never_cuts_a_download_url_and_states_the_loaders_split(monkeypatch, capsys):
    import re

    from livar_bench.data import DATASETS
    from livar_bench.data.offline import load_digits_bundle

    monkeypatch.setenv("COLUMNS", "120")
    code, out, _ = invoke(["ls", "datasets"], monkeypatch, capsys)
    assert code == 0
    urls = [u for d in DATASETS.values() for u in re.findall(r"https?://[^\s)]+", d.how_to_get)]
    assert len(urls) >= 4
    for url in urls:
        assert url in out  # whole, on one line
    digits = load_digits_bundle(None)
    assert f"{len(digits.train):,}/{len(digits.test):,} split" in DATASETS["digits"].summary
