"""Stages of ``livar-bench explain`` on small hand-made inputs (no federated collection here)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from livar_bench.errors import BenchError
from livar_bench.explain.collect import perturbed_weights, quantile_positions
from livar_bench.explain.rule import PAPER_CONTRAST, cells, comparison_frame, derive_rule, rank_agreement
from livar_bench.explain.surrogate import FEATURES, Attribution
from livar_bench.methods.livar_rule import PAPER_RULE, bucket, load_rule

# --- quantile positions reproduce LIVAR's quantile-threshold buckets ------------------------------


@settings(max_examples=60, deadline=None)
# Integers keep neighbouring values far apart relative to float precision, so an interpolated quantile
# never rounds onto a sample value (subnormal neighbours would make the comparison a coin toss).
@given(values=st.lists(st.integers(-10**6, 10**6), min_size=2, max_size=40, unique=True),
       q=st.sampled_from([0.25, 0.5, 0.6, 0.8]))
def test_positions_cut_where_quantiles_cut(values: list[int], q: float) -> None:
    v = torch.tensor(values, dtype=torch.float64)
    n = len(values)
    assume(abs(q * (n - 1) - round(q * (n - 1))) > 1e-6)  # exact-index quantiles are decided by rounding
    pos = quantile_positions(v)
    threshold = torch.quantile(v, q)
    assert torch.equal(pos >= q, v >= threshold)
    assert torch.equal(pos > q, v > threshold)


def test_positions_hand_computed_with_ties() -> None:
    pos = quantile_positions(torch.tensor([[3.0, 1.0], [2.0, 2.0], [5.0, 0.0]]))
    # sorted: 0, 1, 2, 2, 3, 5 -> ranks 0, 1, 2.5 (tie), 2.5, 4, 5 over n - 1 = 5
    assert torch.allclose(pos, torch.tensor([[0.8, 0.2], [0.5, 0.5], [1.0, 0.0]], dtype=torch.float64))
    assert quantile_positions(torch.tensor([7.0])).item() == 0.5


def test_cells_use_livar_bucket_boundaries() -> None:
    rows, cols = cells(np.array([0.1, 0.25, 0.5, 0.51]), np.array([0.59, 0.6, 0.8, 0.81]), (0.25, 0.5), (0.6, 0.8))
    assert cols.tolist() == [0, 1, 1, 2]  # inclusive middle bucket, as livar_rule.bucket
    assert rows.tolist() == [0, 1, 1, 2]
    assert bucket(torch.tensor([0.25]), torch.tensor(0.25), torch.tensor(0.5)).item() == 1


# --- the probe's perturbed weights ------------------------------------------------------------------


def test_perturbed_weights_hand_computed() -> None:
    w = perturbed_weights(torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([0]), math.log(3))
    assert torch.allclose(w, torch.tensor([[0.75, 0.25], [0.25, 0.75]], dtype=torch.float64))


@settings(max_examples=30, deadline=None)
@given(raw=st.lists(st.floats(0.05, 5.0), min_size=2, max_size=6), step=st.floats(0.01, 2.0), data=st.data())
def test_perturbed_weights_scale_one_client_only(raw: list[float], step: float, data: st.DataObject) -> None:
    base = torch.tensor(raw, dtype=torch.float64)
    base = base / base.sum()
    k = data.draw(st.integers(0, len(raw) - 1))
    w = perturbed_weights(base, torch.tensor([k]), step)
    assert torch.allclose(w.sum(1), torch.ones(2, dtype=torch.float64))
    others = [j for j in range(len(raw)) if j != k]
    for row, sign in ((0, 1), (1, -1)):
        # the other clients keep their ratios; client k's odds against them change by exp(+-step)
        assert torch.allclose(w[row, others] / w[row, others].sum(), base[others] / base[others].sum())
        ratio = (w[row, k] / w[row, others].sum()) / (base[k] / base[others].sum())
        assert math.isclose(float(ratio), math.exp(sign * step), rel_tol=1e-9)


# --- rule derivation from given SHAP values ----------------------------------------------------------


def _attribution(values: np.ndarray, expected: float = 0.0) -> Attribution:
    return Attribution(features=FEATURES, values=values, expected_value=expected, prediction=values.sum(1) + expected,
                       r2_train=1.0, r2_test=1.0, n_train=len(values), n_test=0, model="given")


def _one_per_cell(contrib: np.ndarray, context: float = 0.0) -> tuple[pd.DataFrame, Attribution]:
    """Nine samples, one in each (B bucket, A bucket) cell; SHAP of a_pos + b_pos = contrib[i, j]."""
    a_mid, b_mid = [0.1, 0.4, 0.9], [0.3, 0.7, 0.9]
    rows, values = [], []
    for i in range(3):
        for j in range(3):
            rows.append({"a_pos": a_mid[j], "b_pos": b_mid[i], "outcome": 0.0})
            # split the cell's signal contribution unevenly between A and B; context gets its own value
            values.append([0.25 * contrib[i, j], 0.75 * contrib[i, j], context, -context, context])
    return pd.DataFrame(rows), _attribution(np.array(values))


def test_derived_rule_maps_contributions_with_the_stated_formula() -> None:
    contrib = np.array([[-2.0, -2.0, -2.0], [0.5, 0.0, -0.5], [3.0, 1.0, 0.2]])
    table, attribution = _one_per_cell(contrib)
    derived = derive_rule(table, attribution, num_clients=4, contrast=5.0)
    weights = derived.rule.table.numpy()
    assert derived.rule.base == 0.25
    eta = math.log(5.0) / 5.0  # contributions span 3 - (-2) = 5
    assert derived.eta == pytest.approx(eta)
    assert np.allclose(weights, 0.25 * np.exp(eta * contrib))
    assert weights.max() / weights.min() == pytest.approx(5.0)
    assert np.all(weights > 0)
    assert np.array_equal(derived.counts, np.ones((3, 3)))
    assert derived.rule.a_quantiles == (0.25, 0.5) and derived.rule.b_quantiles == (0.6, 0.8)


def test_context_attributions_do_not_enter_the_rule() -> None:
    contrib = np.array([[-1.0, -1.0, -1.0], [0.2, 0.0, -0.2], [1.0, 0.4, 0.1]])
    plain = derive_rule(*_one_per_cell(contrib), num_clients=10)
    noisy = derive_rule(*_one_per_cell(contrib, context=7.0), num_clients=10)
    assert np.allclose(plain.rule.table.numpy(), noisy.rule.table.numpy())


def test_paper_contributions_give_the_paper_ordering() -> None:
    # Feeding the paper's own offsets as contributions must reproduce its bucket order exactly.
    table, attribution = _one_per_cell(np.array(PAPER_RULE.offsets))
    frame = comparison_frame(derive_rule(table, attribution, num_clients=10))
    assert frame["derived_rank"].tolist() == frame["paper_rank"].tolist()
    assert rank_agreement(frame) == pytest.approx(1.0)
    assert PAPER_CONTRAST == pytest.approx(0.19313978 / 0.03813978)


def test_empty_cells_get_the_base_weight_and_are_reported() -> None:
    table = pd.DataFrame({"a_pos": [0.1, 0.9, 0.1], "b_pos": [0.1, 0.1, 0.95], "outcome": 0.0})
    values = np.zeros((3, len(FEATURES)))
    values[:, 1] = [-1.0, -2.0, 2.0]
    derived = derive_rule(table, _attribution(values), num_clients=5)
    assert derived.counts.sum() == 3
    assert derived.rule.offsets[1][1] == 0.0  # B mid / A mid has no sample
    assert "B mid / A mid" in derived.rule.provenance["empty_cells"]
    assert derived.rule.table.numpy().max() / derived.rule.table.numpy().min() == pytest.approx(PAPER_CONTRAST)


def test_flat_attributions_give_a_flat_rule() -> None:
    table, attribution = _one_per_cell(np.zeros((3, 3)))
    derived = derive_rule(table, attribution, num_clients=3)
    assert derived.eta == 0.0
    assert np.allclose(derived.rule.table.numpy(), 1 / 3)


def test_bad_contrast_is_a_user_error() -> None:
    with pytest.raises(BenchError, match="contrast"):
        derive_rule(*_one_per_cell(np.eye(3)), num_clients=3, contrast=0.5)


def test_derived_rule_round_trips_through_load_rule(tmp_path) -> None:
    derived = derive_rule(*_one_per_cell(np.arange(9.0).reshape(3, 3)), num_clients=10,
                          provenance={"dataset": "digits", "seed": 0})
    path = tmp_path / "rule.json"
    derived.rule.save(path)
    loaded = load_rule(path)
    assert torch.allclose(loaded.table, derived.rule.table)
    assert loaded.provenance["dataset"] == "digits" and loaded.provenance["n_samples"] == 9


# --- surrogate + SHAP recover a known monotone dependence ---------------------------------------------


def _synthetic_table(seed: int, n: int = 500) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({
        "a_pos": rng.uniform(0, 1, n), "b_pos": rng.uniform(0, 1, n), "depth": rng.uniform(0, 1, n),
        "kind_code": rng.integers(0, 4, n).astype(float), "client_share": rng.dirichlet(np.ones(10), n // 10 + 1)
        .reshape(-1)[:n],
    })
    # Rises with the B position, falls with the A position, plus context effects and noise.
    table["outcome"] = (2.0 * table["b_pos"] - 1.0 * table["a_pos"] + 0.3 * table["depth"]
                        + 0.05 * rng.standard_normal(n))
    return table


@pytest.mark.parametrize("seed", [0, 1])
def test_known_outcome_gives_ordered_buckets(seed: int) -> None:
    pytest.importorskip("shap")
    from livar_bench.explain.surrogate import SurrogateSettings, fit_and_explain

    table = _synthetic_table(seed)
    attribution = fit_and_explain(table, SurrogateSettings(n_estimators=150, seed=seed))
    assert attribution.r2_test > 0.8
    # SHAP values add up to the prediction (local accuracy), so the attribution is trustworthy
    assert np.allclose(attribution.values.sum(1) + attribution.expected_value, attribution.prediction, atol=1e-6)
    weights = derive_rule(table, attribution, num_clients=10).rule.table.numpy()
    assert np.all(np.diff(weights, axis=0) > 0), weights  # higher B bucket -> larger weight, every A column
    assert np.all(np.diff(weights, axis=1) < 0), weights  # higher A bucket -> smaller weight, every B row


def test_surrogate_refuses_too_few_samples() -> None:
    pytest.importorskip("shap")
    from livar_bench.explain.surrogate import fit_and_explain

    with pytest.raises(BenchError, match="samples"):
        fit_and_explain(_synthetic_table(0, n=5))


# --- malformed rule files are clear errors ---------------------------------------------------------------


GOOD = {"format": "livar-rule/1", "a_quantiles": [0.25, 0.5], "b_quantiles": [0.6, 0.8], "base": 0.1,
        "offsets": [[0.0] * 3] * 3}


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2, 3]", "format"),
    (json.dumps({**GOOD, "format": "livar-rule/0"}), "format"),
    (json.dumps({**GOOD, "extra": 1}), "unknown keys"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "base"}), "malformed"),
    (json.dumps({**GOOD, "offsets": [[0.0] * 3] * 2}), "3x3"),
    (json.dumps({**GOOD, "offsets": [[0.0, 0.0, "x"]] * 3}), "malformed"),
    (json.dumps({**GOOD, "offsets": [[-0.2, 0.0, 0.0]] * 3}), "non-negative"),
    (json.dumps({**GOOD, "a_quantiles": [0.5, 0.25]}), "increasing"),
    (json.dumps({**GOOD, "b_quantiles": [0.6, 0.8, 0.9]}), "two increasing"),
    (json.dumps({**GOOD, "base": float("nan")}), "finite"),
])
def test_malformed_rule_files_are_clear_errors(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "rule.json"
    path.write_text(content)
    with pytest.raises(BenchError, match=message) as info:
        load_rule(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_rule_file_says_how_to_make_one(tmp_path) -> None:
    with pytest.raises(BenchError, match="livar-bench explain"):
        load_rule(tmp_path / "absent.json")
    assert load_rule(None) is PAPER_RULE and load_rule("paper") is PAPER_RULE


def test_explain_clients_equal_the_clients_of_a_fedavg_run(tmp_path, tiny_spec_values) -> None:
    """explain uses run's client phase and seeding: round-1 signals equal a FedAvg run's round 1."""
    from livar_bench.config import make_spec
    from livar_bench.device import resolve_device
    from livar_bench.explain.collect import ProbeSettings, collect
    from livar_bench.federation import run_federation
    from livar_bench.federation.round1_cache import Round1Cache
    from livar_bench.types import Signal

    spec = make_spec({**tiny_spec_values, "rounds": 1, "val_fraction": 0.2, "method": "fedavg"})
    run_federation(spec, tmp_path, share_round1=True, round1_signals=frozenset({Signal.LORA_SIGNAL}))
    cache = Round1Cache.for_run(tmp_path, spec, spec.method_spec.build(), resolve_device("cpu"))
    updates = {u.client_id: u for u in cache.load({Signal.LORA_SIGNAL}).updates}
    table = collect(spec, ProbeSettings(max_val_samples=16, probe_pairs=4)).table
    assert len(table) == 4
    for row in table.itertuples():
        assert row.signal_a == float(updates[row.client].lora_signals[f"{row.module}.lora_A"])
        assert row.signal_b == float(updates[row.client].lora_signals[f"{row.module}.lora_B"])
