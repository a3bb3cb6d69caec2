"""Every method runs end to end through ``livar-bench run`` on the tiny offline setup."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from livar_bench.cli import app, main

SPECS = ["livar", "livar+ccvr", "fedavg", "fedprox", "ccvr", "ties", "task_arithmetic", "ties+ccvr",
         "livar[eval_delta=reference]"]
TINY = ["--dataset", "synthetic", "--backbone", "livar_micro_vit", "--clients", "3", "--rounds", "1", "--epochs", "1",
        "--lora-rank", "2", "--lora-alpha", "2", "--lr", "3e-3", "--device", "cpu", "--max-test-samples", "60"]


def test_every_method_runs(tmp_path) -> None:
    runner = CliRunner()
    for spec in SPECS:
        result = runner.invoke(app, ["run", *TINY, "--method", spec, "--out", str(tmp_path)])
        assert result.exit_code == 0, f"{spec}: {result.output}\n{result.exception!r}"
        assert "final test acc" in result.output, spec
    runs = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert len(runs) == len(SPECS)  # distinct run ids: the spec (with its hyperparameters) is part of the id
    for run in runs:
        metrics = pd.read_csv(run / "metrics.csv")
        assert set(metrics["round"]) >= {0, 1}


def test_param_option_reaches_the_method(tmp_path) -> None:
    result = CliRunner().invoke(app, ["run", *TINY, "--method", "livar", "--param", "livar.head_subset=all",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "livar[head_subset=all]" in result.output


@pytest.mark.parametrize("spec", ["nosuchmethod", "livar[nope=1]", "ties[density=2]"])
def test_bad_method_is_exit_code_2_with_one_line(spec: str, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["livar-bench", "run", "--method", spec, "--dataset", "synthetic",
                                      "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main()  # the console entry point: BenchError -> one line, exit code 2
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert "error:" in lines[0]
