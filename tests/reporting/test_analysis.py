"""Paired differences, pooling refusal and ablation tables on hand-built tidy frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livar_bench.errors import BenchError
from livar_bench.reporting.pooling import check_pooling
from livar_bench.reporting.stats import ablation_table, paired_differences, select_values, t_quantile


def rows(method: str, seed: int, accs: list[float], *, alpha: float = 0.5, dataset: str = "digits",
         partition_id: str | None = None, split: str = "test", num_clients: int = 10) -> list[dict]:
    """Tidy rows of one run with test acc ``accs[r]`` at round r."""
    run_id = f"{method}-{dataset}-{alpha}-{seed}-{num_clients}"
    pid = partition_id or f"p-{dataset}-{alpha}-{seed}-{num_clients}"
    return [dict(run_id=run_id, method=method, dataset=dataset, alpha=alpha, seed=seed, partition_id=pid,
                 num_clients=num_clients, round=r, split=split, metric="acc", value=v) for r, v in enumerate(accs)]


def frame(*parts: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([r for p in parts for r in p])


def test_t_quantile_known_values() -> None:
    # Textbook two-sided 95% critical values.
    assert t_quantile(2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(9) == pytest.approx(2.262, abs=1e-3)
    assert math.isnan(t_quantile(0))


def test_paired_difference_hand_computed() -> None:
    # last-round accs: fedavg 0.50 0.60 0.70, livar 0.55 0.62 0.78 -> diffs 0.05 0.02 0.08
    # mean 0.05, sd 0.03, se 0.03/sqrt(3), half width t(2)=4.30265 * se = 0.0745248
    f = frame(
        rows("fedavg", 0, [0.1, 0.50]), rows("fedavg", 1, [0.1, 0.60]), rows("fedavg", 2, [0.1, 0.70]),
        rows("livar", 0, [0.1, 0.55]), rows("livar", 1, [0.1, 0.62]), rows("livar", 2, [0.9, 0.78]),
    )
    out = paired_differences(f, baseline="fedavg")
    assert len(out) == 1
    row = out.iloc[0]
    assert row["method"] == "livar" and row["n_seeds"] == 3
    assert row["mean_diff"] == pytest.approx(0.05)
    assert row["ci_low"] == pytest.approx(0.05 - 0.0745248, abs=1e-6)
    assert row["ci_high"] == pytest.approx(0.05 + 0.0745248, abs=1e-6)
    assert row["baseline_mean"] == pytest.approx(0.60)
    assert row["reported"] == "test acc, last round" == out.attrs["reported"]


def test_pairs_only_seeds_both_have_and_groups_by_alpha() -> None:
    f = frame(
        rows("fedavg", 0, [0.5]), rows("fedavg", 1, [0.6]), rows("ties", 0, [0.7]),  # ties lacks seed 1
        rows("fedavg", 0, [0.2], alpha=0.1), rows("ties", 0, [0.1], alpha=0.1),
    )
    out = paired_differences(f, baseline="fedavg").set_index("alpha")
    assert out.loc[0.5, "n_seeds"] == 1 and out.loc[0.5, "mean_diff"] == pytest.approx(0.2)
    assert math.isnan(out.loc[0.5, "ci_low"])  # one seed: no interval
    assert out.loc[0.1, "mean_diff"] == pytest.approx(-0.1)


def test_mixing_partitions_is_refused_naming_setting() -> None:
    f = frame(rows("fedavg", 0, [0.5], num_clients=10), rows("livar", 0, [0.6], num_clients=5))
    with pytest.raises(BenchError, match="num_clients") as err:
        paired_differences(f, baseline="fedavg")
    assert "dataset=digits, alpha=0.5, seed=0" in str(err.value)


def test_same_partition_is_poolable() -> None:
    check_pooling(frame(rows("fedavg", 0, [0.5]), rows("livar", 0, [0.6])))


def test_duplicate_runs_in_cell_refused() -> None:
    a = rows("fedavg", 0, [0.5])
    b = [dict(r, run_id="other") for r in rows("fedavg", 0, [0.6])]
    with pytest.raises(BenchError, match="share a"):
        paired_differences(frame(a, b, rows("livar", 0, [0.6])), baseline="fedavg")


def test_unknown_baseline_lists_methods() -> None:
    with pytest.raises(BenchError, match="fedavg"):
        paired_differences(frame(rows("fedavg", 0, [0.5])), baseline="fedprox")


def test_best_round_uses_validation_never_test() -> None:
    test = rows("fedavg", 0, [0.1, 0.9, 0.3])
    with pytest.raises(BenchError, match="validation"):
        select_values(frame(test), round="best")
    val = rows("fedavg", 0, [0.1, 0.2, 0.6], split="val")  # validation peaks at round 2
    chosen = select_values(frame(test, val), round="best")
    assert chosen["round"].tolist() == [2] and chosen["value"].tolist() == [0.3]


def test_ablation_table_layout() -> None:
    f = frame(rows("livar", 0, [0.50]), rows("livar", 1, [0.70]), rows("livar[lora=false]", 0, [0.4]),
              rows("livar", 0, [0.2], alpha=0.1))
    table = ablation_table(f, {"both": "livar", "head only": "livar[lora=false]"})
    assert list(table.index) == ["both", "head only"]
    # mean 60.00, sample sd of (50, 70) = 14.14
    assert table.loc["both", ("digits", 0.5)] == "60.00 ± 14.14"
    assert table.loc["head only", ("digits", 0.5)] == "40.00"
    assert pd.isna(table.loc["head only", ("digits", 0.1)])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=2, max_size=8), st.floats(-1, 1, allow_nan=False))
def test_constant_shift_has_zero_width_interval(base: list[float], shift: float) -> None:
    # A method that beats the baseline by exactly `shift` on every seed: mean = shift, no spread.
    f = frame(*[rows("fedavg", s, [v]) for s, v in enumerate(base)],
              *[rows("m", s, [v + shift]) for s, v in enumerate(base)])
    row = paired_differences(f, baseline="fedavg").iloc[0]
    assert row["n_seeds"] == len(base)
    assert row["mean_diff"] == pytest.approx(shift, abs=1e-9)
    assert row["ci_high"] - row["ci_low"] == pytest.approx(0, abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=2, max_size=8))
def test_interval_contains_mean_and_flips_with_roles(diffs: list[float]) -> None:
    f = frame(*[rows("fedavg", s, [0.0]) for s in range(len(diffs))],
              *[rows("m", s, [d]) for s, d in enumerate(diffs)])
    fwd = paired_differences(f, baseline="fedavg").iloc[0]
    rev = paired_differences(f, baseline="m").iloc[0]
    assert fwd["ci_low"] <= fwd["mean_diff"] <= fwd["ci_high"]
    assert rev["mean_diff"] == pytest.approx(-fwd["mean_diff"])
    assert rev["ci_low"] == pytest.approx(-fwd["ci_high"])
    assert fwd["mean_diff"] == pytest.approx(float(np.mean(diffs)))


def test_settings_name_differences_not_in_columns() -> None:
    f = frame(rows("fedavg", 0, [0.5]), rows("livar", 0, [0.6]))
    f.loc[f["method"] == "livar", "partition_id"] = "other"
    settings = pd.DataFrame({"max_train_samples": [None, 500], "lr": [0.1, 0.2]},
                            index=f["run_id"].unique())
    with pytest.raises(BenchError, match="differing settings: max_train_samples\\)"):
        check_pooling(f.drop(columns="num_clients"), settings=settings)


def test_ablation_preset_matches_livar_fields() -> None:
    from livar_bench.experiments.sweep import expand, load_sweep
    from livar_bench.methods import canonical_spec, parse_method
    from livar_bench.reporting.stats import ABLATION_VARIANTS

    specs = expand(load_sweep("livar_bench/configs/ablation.yaml"))
    assert {s.method for s in specs} == set(ABLATION_VARIANTS.values())
    assert {s.alpha for s in specs} == {0.05, 0.1, 0.2, 0.5}
    assert all(canonical_spec(v) == v for v in ABLATION_VARIANTS.values())
    head_only = parse_method(ABLATION_VARIANTS["LIVAR head only"]).aggregator
    lora_only = parse_method(ABLATION_VARIANTS["LIVAR LoRA only"]).aggregator
    assert (head_only.head, head_only.lora) == (True, False)
    assert (lora_only.head, lora_only.lora) == (False, True)


def test_ablation_cli_on_stored_runs(tmp_path) -> None:
    """The `ablation` command reads DONE runs and writes the variant x (dataset, alpha) table."""
    from typer.testing import CliRunner

    from livar_bench.cli import app

    f = frame(rows("fedavg", 0, [0.1, 0.40]), rows("fedavg", 1, [0.1, 0.50]),
              rows("livar[lora=false]", 0, [0.1, 0.6]), rows("livar[lora=false]", 1, [0.1, 0.8]))
    for run_id, run in f.groupby("run_id"):
        folder = tmp_path / "runs" / run_id
        folder.mkdir(parents=True)
        run.to_csv(folder / "metrics.csv", index=False)
        (folder / "DONE").write_text("ok\n")
    result = CliRunner().invoke(app, ["ablation", "--out", str(tmp_path), "--format", "latex"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "tables" / "ablation_acc.tex").read_text()
    assert r"FedAvg & 45.00 $\pm$ 7.07 \\" in text  # mean of 40, 50; sample sd 7.07
    assert r"LIVAR head only & 70.00 $\pm$ 14.14 \\" in text
    assert "LoRA only" not in text  # variants without runs are left out (with a note)


@pytest.mark.slow
def test_three_seed_sweep_gives_paired_table(tmp_path) -> None:
    """livar, fedavg and ties over 3 seeds on synthetic data -> one CI row per method vs fedavg."""
    from livar_bench.config import make_spec
    from livar_bench.federation import run_federation
    from livar_bench.reporting import collect

    base = dict(dataset="synthetic", backbone="livar_micro_vit", num_clients=3, rounds=1, local_epochs=1,
                batch_size=32, lr=3e-3, alpha=0.5, lora_rank=2, lora_alpha=2.0, device="cpu",
                max_train_samples=150, max_test_samples=60)
    for seed in range(3):
        for method in ("fedavg", "livar", "ties"):
            run_federation(make_spec({**base, "seed": seed, "method": method}), tmp_path)
    out = paired_differences(collect(tmp_path), baseline="fedavg").set_index("method")
    assert sorted(out.index) == ["livar", "ties"]
    assert (out["n_seeds"] == 3).all()
    assert ((out["ci_low"] <= out["mean_diff"]) & (out["mean_diff"] <= out["ci_high"])).all()
    assert np.isfinite(out[["ci_low", "ci_high"]].to_numpy()).all()
