"""Validation-split tuning: grid parsing, the selection rule, and one tiny end-to-end CLI sweep."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from livar_bench.cli import app
from livar_bench.errors import BenchError
from livar_bench.experiments.tune import (
    Candidate,
    choose,
    file_name,
    grid_points,
    label,
    last_val_acc,
    parse_grid,
)


def test_parse_grid_defaults_to_first_component() -> None:
    grid = parse_grid("ties+ccvr", ["density=0.2,0.5", "ccvr.epochs=1,2"])
    assert grid == {("ties", "density"): ["0.2", "0.5"], ("ccvr", "epochs"): ["1", "2"]}


@pytest.mark.parametrize("item, message", [
    ("density", "expected KEY"), ("fedavg.lr=1", "not part of method"), ("density=0.2,0.2", "twice"),
])
def test_parse_grid_errors(item: str, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        parse_grid("ties", [item])


def test_grid_points_product_with_typed_values() -> None:
    points = grid_points("ties[lam=1.0]", parse_grid("ties", ["density=0.2,0.5", "lam=0.4,1.0"]))
    assert len(points) == 4
    spec, values = points[1]
    assert spec == "ties[density=0.2,lam=1.0]"  # canonical: keys sorted
    assert values == {"ties.density": 0.2, "ties.lam": 1.0}


def test_unknown_hyperparameter_fails_before_running() -> None:
    with pytest.raises(BenchError, match="no hyperparameter"):
        grid_points("ties", parse_grid("ties", ["dnsity=0.2"]))


def test_choose_highest_mean_first_on_ties() -> None:
    a = Candidate("a", {}, ("1", "2"), (0.25, 0.75))  # mean 0.5 (binary-exact values: an exact tie)
    b = Candidate("b", {}, ("3", "4"), (0.375, 0.625))  # mean 0.5: a tie, the earlier grid point wins
    c = Candidate("c", {}, ("5", "6"), (0.875, 0.0))  # mean 0.4375
    assert choose([a, b, c]) is a
    assert choose([c, b]) is b
    with pytest.raises(BenchError):
        choose([Candidate("d", {}, ("7",), (math.nan,))])


def test_score_reads_last_round_validation_not_test() -> None:
    rows = pd.DataFrame({"round": [0, 1, 2, 1, 2], "split": ["val", "val", "val", "test", "test"],
                         "metric": ["acc"] * 5, "value": [0.1, 0.9, 0.4, 0.2, 0.99]})
    assert last_val_acc(rows) == 0.4
    assert math.isnan(last_val_acc(rows[rows["split"] == "test"]))


def test_file_name() -> None:
    assert file_name("ties") == "ties.json"
    assert file_name("livar+ccvr") == "livar+ccvr.json"


def test_cli_tune_end_to_end(tmp_path) -> None:
    args = ["tune", "--method", "ties", "--grid", "density=0.2,1.0", "--dataset", "synthetic",
            "--backbone", "livar_micro_vit", "--clients", "3", "--rounds", "1", "--epochs", "1", "--lr", "3e-3",
            "--lora-rank", "2", "--lora-alpha", "2", "--max-train-samples", "150", "--max-test-samples", "40",
            "--device", "cpu", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "tuning" / "ties.json").read_text())
    assert record["val_fraction"] == 0.1 and record["grid"] == {"ties.density": ["0.2", "1.0"]}
    scores = []
    for entry in record["results"]:  # the recorded score is the run's own last-round val acc
        (run_id,) = entry["run_ids"]
        metrics = pd.read_csv(tmp_path / "tuning" / "runs" / run_id / "metrics.csv")
        assert entry["val_acc"] == last_val_acc(metrics)
        scores.append(entry["val_acc"])
    best = record["results"][scores.index(max(scores))]
    assert record["chosen"]["spec"] == best["spec"]
    assert result.stdout.strip().splitlines()[-1] == best["spec"]
    assert not (tmp_path / "runs").exists()  # tuning runs never land where test tables are collected


def test_cli_tune_bad_grid_is_a_bench_error(tmp_path) -> None:
    result = CliRunner().invoke(app, ["tune", "--method", "ties", "--grid", "density", "--out", str(tmp_path)])
    assert isinstance(result.exception, BenchError)


def test_run_settings_are_grid_keys_too() -> None:
    grid = parse_grid("fedavg", ["lr=1e-4,1e-3", "run.local_epochs=1,2"])
    assert grid == {("run", "lr"): ["1e-4", "1e-3"], ("run", "local_epochs"): ["1", "2"]}
    assert parse_grid("fedavg+ccvr", ["ccvr.lr=0.1"]) == {("ccvr", "lr"): ["0.1"]}  # a stage's own lr stays its own
    points = grid_points("fedavg", grid)
    assert points[1] == ("fedavg", {"run.lr": 0.0001, "run.local_epochs": 2})
    assert label(*points[2]) == "fedavg --lr 0.001 --epochs 1"
    with pytest.raises(BenchError, match="cannot be tuned"):
        parse_grid("fedavg", ["run.seed=1,2"])
    with pytest.raises(BenchError, match="not a number"):
        grid_points("fedavg", parse_grid("fedavg", ["lr=fast"]))


def test_cli_tunes_the_client_learning_rate(tmp_path) -> None:
    args = ["tune", "--method", "fedavg", "--grid", "lr=1e-4,3e-3", "--dataset", "synthetic",
            "--backbone", "livar_micro_vit", "--clients", "3", "--rounds", "1", "--epochs", "1",
            "--lora-rank", "2", "--lora-alpha", "2", "--max-train-samples", "150", "--max-test-samples", "40",
            "--device", "cpu", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "tuning" / "fedavg.json").read_text())
    assert [e["values"] for e in record["results"]] == [{"run.lr": 0.0001}, {"run.lr": 0.003}]
    lrs = []
    for entry in record["results"]:  # each run was trained with its grid point's learning rate
        (run_id,) = entry["run_ids"]
        lrs.append(json.loads((tmp_path / "tuning" / "runs" / run_id / "spec.json").read_text())["lr"])
    assert lrs == [0.0001, 0.003] and "lr" not in record["settings"]
    best = max(record["results"], key=lambda e: e["val_acc"])
    assert result.stdout.strip().splitlines()[-1] == best["spec"] == f"fedavg --lr {best['values']['run.lr']:g}"
