"""``livar-bench explain`` end to end on the synthetic dataset, the probe against a direct computation,
and ``run --livar-rule``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from livar_bench.cli import app
from livar_bench.cli.run import apply_livar_rule
from livar_bench.errors import BenchError
from livar_bench.methods.base import ClientUpdate
from livar_bench.methods.livar_rule import load_rule
from livar_bench.ops.weighted import sample_weights, weighted_average_params

TINY = ["--dataset", "synthetic", "--backbone", "livar_micro_vit", "--clients", "3", "--epochs", "1",
        "--batch-size", "32", "--lr", "3e-3", "--lora-rank", "2", "--lora-alpha", "2", "--device", "cpu",
        "--seed", "0", "--alpha", "0.5"]


def test_probe_losses_match_directly_built_merges() -> None:
    """Each probed loss equals the held-out loss of the merge built by hand with the perturbed weights,
    in the order of the (shuffled) pairs."""
    from livar_bench.data import load_dataset
    from livar_bench.data.transforms import DeviceTransform
    from livar_bench.explain.collect import heldout_loss, module_of, probe_round
    from livar_bench.models import build_model

    model, info = build_model("livar_micro_vit", 10, rank=2, alpha=2.0, pretrained=False)
    tf = DeviceTransform(info.input_size, info.mean, info.std)
    val = load_dataset("synthetic").test.subset(torch.arange(24))
    g = torch.Generator().manual_seed(0)
    start = model.initial_params(g)
    updates = [ClientUpdate(k, n, torch.zeros(10, dtype=torch.long),
                            {key: v + 0.3 * torch.randn(v.shape, generator=g) for key, v in start.items()})
               for k, n in enumerate([5, 20, 11])]
    modules = sorted({module_of(k) for k in start if ".lora_" in k})
    pairs = torch.tensor([7, 2, 12, 10, 0])  # flat k * M + m: unsorted, several modules, two clients on one
    step = 0.4
    merged, base_loss, losses = probe_round(model, updates, modules, pairs, val, tf, 64, None, step)
    weights = sample_weights([u.num_samples for u in updates])
    fedavg = weighted_average_params([u.params for u in updates], weights)
    assert all(torch.equal(merged[k], fedavg[k]) for k in fedavg)
    assert torch.isclose(base_loss, heldout_loss(model, fedavg, val, tf, 64, None))
    for i, flat in enumerate(pairs.tolist()):
        k, m = divmod(flat, len(modules))
        for col, sign in ((0, 1.0), (1, -1.0)):
            w = weights.clone()
            w[k] *= np.exp(sign * step)
            w /= w.sum()
            mixed = weighted_average_params([u.params for u in updates], w)
            params = dict(fedavg)
            for key in (f"{modules[m]}.lora_A", f"{modules[m]}.lora_B"):
                params[key] = mixed[key]
            expected = heldout_loss(model, params, val, tf, 64, None)
            assert torch.isclose(losses[i, col], expected, rtol=1e-5, atol=1e-6), (i, col)
    assert not torch.allclose(losses[:, 0], losses[:, 1])  # the perturbation does move the loss


def test_explain_end_to_end(tmp_path) -> None:
    pytest.importorskip("shap")
    out = tmp_path / "explain"
    result = CliRunner().invoke(app, ["explain", *TINY, "--rounds", "2", "--probe-pairs", "10",
                                      "--max-val-samples", "48", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("rule.json", "samples.csv", "shap_values.csv", "shap_values.npz", "surrogate.json",
                 "comparison.csv", "comparison.md", "shap_summary.png", "shap_dependence_a.png",
                 "shap_dependence_b.png", "rule_tables.png"):
        assert (out / name).is_file(), name
    samples = pd.read_csv(out / "samples.csv")
    assert len(samples) == 20 and set(samples["round"]) == {1, 2}  # 10 probed pairs per round
    assert np.allclose(samples["outcome"], -(samples["loss_up"] - samples["loss_down"]) / (2 * 0.5))
    assert samples["a_pos"].between(0, 1).all() and samples["kind"].isin(["qkv", "proj", "fc1", "fc2"]).all()
    shap_values = pd.read_csv(out / "shap_values.csv")
    assert len(shap_values) == len(samples)
    recon = shap_values.filter(like="shap_").sum(axis=1)  # shap_* columns + shap_base = prediction
    assert np.allclose(recon, shap_values["prediction"], atol=1e-6)
    rule = load_rule(out / "rule.json")
    assert rule.base == pytest.approx(1 / 3)
    prov = rule.provenance
    assert prov["dataset"] == "synthetic" and prov["alpha"] == 0.5 and prov["backbone"] == "livar_micro_vit"
    assert prov["n_samples"] == 20 and "outcome" in prov and "surrogate_r2_test" in prov
    assert len(pd.read_csv(out / "comparison.csv")) == 9


def test_explain_rule_runs_in_livar(tmp_path) -> None:
    from livar_bench.methods import entries

    if "livar" not in {e.name for e in entries()}:
        pytest.skip("the livar method is not registered yet")
    rule = tmp_path / "rule.json"
    rule.write_text(json.dumps({"format": "livar-rule/1", "a_quantiles": [0.25, 0.5], "b_quantiles": [0.6, 0.8],
                                "base": 0.1, "offsets": [[-0.05] * 3, [0.0] * 3, [0.1, 0.05, 0.0]]}))
    result = CliRunner().invoke(app, ["run", *TINY, "--rounds", "1", "--method", "livar", "--livar-rule", str(rule),
                                      "--out", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    assert "final test acc" in result.output
    spec = json.loads(next((tmp_path / "results" / "runs").glob("*/spec.json")).read_text())
    assert str(rule) in spec["method"]


def test_livar_rule_option_errors(tmp_path) -> None:
    rule = tmp_path / "rule.json"
    rule.write_text(json.dumps({"format": "livar-rule/1", "a_quantiles": [0.25, 0.5], "b_quantiles": [0.6, 0.8],
                                "base": 0.1, "offsets": [[0.0] * 3] * 3}))
    assert apply_livar_rule("livar+ccvr", rule) == f"livar[rule={rule}]+ccvr"
    with pytest.raises(BenchError, match="livar part"):
        apply_livar_rule("fedavg+ccvr", rule)
    with pytest.raises(BenchError, match="does not exist"):
        apply_livar_rule("livar", tmp_path / "absent.json")
    odd = tmp_path / "My Rules+[1]" / "Rule,A.json"  # any path a shell accepts works (issue 10)
    odd.parent.mkdir()
    odd.write_text(rule.read_text())
    spec = apply_livar_rule("livar+ccvr", odd)
    assert spec == f"livar[rule={json.dumps(str(odd))}]+ccvr"
    from livar_bench.methods import MethodSpec

    assert MethodSpec.parse(spec).build().aggregator.rule == str(odd)


def test_package_imports_without_shap() -> None:
    code = ("import sys; import livar_bench.cli, livar_bench.explain.collect, livar_bench.explain.rule; "
            "assert 'shap' not in sys.modules, 'shap imported at module level'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
