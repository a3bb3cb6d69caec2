"""Every method runs end to end through ``livar-bench run`` on the tiny offline setup."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from livar_bench.cli import app, main
from livar_bench.methods import canonical_spec, entries

# Every registered method and stage (a stage runs as fedavg+stage), plus a few compositions.
SPECS = [e.name for e in entries()] + ["livar+ccvr", "ties+ccvr", "fedadam+ccvr", "livar[eval_delta=reference]",
                                      "flexlora+ccvr", "dare_ties+clip", "scaffold+clip", "rolora+ccvr"]
TINY = ["--dataset", "synthetic", "--backbone", "livar_micro_vit", "--clients", "3", "--rounds", "1", "--epochs", "1",
        "--lora-rank", "2", "--lora-alpha", "2", "--lr", "3e-3", "--device", "cpu", "--max-test-samples", "60"]


def test_every_method_runs(tmp_path) -> None:
    runner = CliRunner()
    for spec in SPECS:
        result = runner.invoke(app, ["run", *TINY, "--method", spec, "--out", str(tmp_path)])
        assert result.exit_code == 0, f"{spec}: {result.output}\n{result.exception!r}"
        assert "final test acc" in result.output, spec
    runs = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert len(runs) == len({canonical_spec(s) for s in SPECS})  # distinct run ids: the spec (with its hyperparameters) is part of the id
    for run in runs:
        metrics = pd.read_csv(run / "metrics.csv")
        assert set(metrics["round"]) >= {0, 1}


def test_param_option_reaches_the_method(tmp_path) -> None:
    result = CliRunner().invoke(app, ["run", *TINY, "--method", "livar", "--param", "livar.head_subset=all",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "livar[head_subset=all]" in result.output


def test_ccvr_alias_is_the_same_run_as_fedavg_plus_ccvr(tmp_path) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["run", *TINY, "--method", "ccvr", "--out", str(tmp_path)])
    second = runner.invoke(app, ["run", *TINY, "--method", "fedavg+ccvr", "--out", str(tmp_path)])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert "already done" in second.output


@pytest.mark.parametrize(("spec", "needles"), [
    ("nosuchmethod", ["unknown method 'nosuchmethod'", "Known:"]),
    ("livar[nope=1]", ["livar has no hyperparameter 'nope'", "valid: head"]),
    ("ties[density=2]", ["ties.density: cannot use '2': expected a number in [0, 1]", "fraction of each client's"]),
    ("livar[", ["'[' is never closed"]),
    ("livar++ccvr", ["expected a method name"]),
    ("+ccvr", ["expected a method name at position 1"]),
    ("fedadam[beta1=2]", ["fedadam.beta1: cannot use '2': expected a number in [0, 1)", "first moment"]),
    ("fedadam[beta1=x]", ["fedadam.beta1: cannot use 'x'"]),
    ("livar_exact[lora=false]", ["livar_exact: livar_exact needs lora=true"]),
    ("livar_exact[eval_delta=reference]", ["livar_exact cannot take eval_delta=reference",
                                           "use livar[eval_delta=reference]"]),
])
def test_bad_method_is_exit_code_2_with_one_line(spec: str, needles: list[str], tmp_path, monkeypatch,
                                                  capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["livar-bench", "run", "--method", spec, "--dataset", "synthetic",
                                      "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main()  # the console entry point: BenchError -> one line, exit code 2
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert "error:" in lines[0] and all(n in lines[0] for n in needles), lines[0]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing written


def test_personalised_method_without_eval_local_warns_once(tmp_path) -> None:
    result = CliRunner().invoke(app, ["run", *TINY, "--method", "fedsa_lora", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "--eval-local" in warnings[0]
    quiet = CliRunner().invoke(app, ["run", *TINY, "--method", "fedsa_lora", "--eval-local", "--out", str(tmp_path)])
    assert quiet.exit_code == 0 and "warning:" not in quiet.output


@pytest.mark.parametrize(("extra", "needles"), [
    (["--method", "livar", "--client-ranks", "1,2"], ["gives clients different LoRA ranks", "methods that can:", "flexlora", "hetlora"]),
    (["--method", "flora", "--client-ranks", "0,2"], ["every client rank must be at least 1"]),
    (["--method", "flora", "--client-ranks", "a,b"], ["--client-ranks 'a,b': expected comma-separated integers"]),
    (["--method", "flora", "--lora-rank", "4000"], ["LoRA rank 4000 is larger than layer", "use a rank of at most"]),
])
def test_bad_rank_inputs_are_one_line(extra, needles, tmp_path, monkeypatch, capsys) -> None:
    args = ["livar-bench", "run", *TINY[:6], "--device", "cpu", *extra, "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), lines
    written = [p for p in tmp_path.rglob("*") if p.is_file()] if tmp_path.exists() else []
    assert written == []  # no run, partition or record files
