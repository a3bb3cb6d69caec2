"""FlexLoRA, HetLoRA and LoRA-FAIR: one round against numpy computations written from the papers' rules,
mixed client ranks, and the edge cases (one client, identical clients, a zero adapter).

Tolerances: the methods compute in float64 and return float32 factors, so products agree to 1e-5
relative (float32 rounding of the factors); weights and factors that involve no SVD to 1e-6.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from livar_bench.federation import with_rank
from livar_bench.methods import parse_method
from livar_bench.types import ClientUpdate
from tests.methods._fakes import MODULES, RANK, context, make_updates

SCALE = 2.0
TOL = dict(rtol=1e-5, atol=1e-5)


def np_(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


def weights(updates) -> np.ndarray:
    n = np.array([u.num_samples for u in updates], dtype=float)
    return n / n.sum()


def products(updates, module: str, scales) -> np.ndarray:
    return np.stack([s * np_(u.params[f"{module}.lora_B"]) @ np_(u.params[f"{module}.lora_A"])
                     for u, s in zip(updates, scales, strict=True)])


def best_rank(m: np.ndarray, r: int) -> np.ndarray:
    u, s, vh = np.linalg.svd(m, full_matrices=False)
    return (u[:, :r] * s[:r]) @ vh[:r]


def mixed_rank_updates(ranks=(1, 2, 2)):
    """Clients of ranks r_k on the rank-2 global adapter: factors zero-padded, each with its scale 2 / r_k."""
    params, updates = make_updates()
    out = [dataclasses.replace(u, params=with_rank(u.params, r), lora_scale=2.0 / r)
           for u, r in zip(updates, ranks, strict=True)]
    return params, out, [2.0 / r for r in ranks]


def test_flexlora_one_round_against_the_rule() -> None:
    params, updates, scales = mixed_rank_updates()
    ctx = context(lora_scale=1.0)  # global scale alpha / max rank = 2 / 2
    out = parse_method("flexlora").aggregate(params, updates, ctx)
    p = weights(updates)
    for m in MODULES:
        full = np.einsum("k,koi->oi", p, products(updates, m, scales))
        b, a = np_(out[f"{m}.lora_B"]), np_(out[f"{m}.lora_A"])
        np.testing.assert_allclose(1.0 * b @ a, best_rank(full, RANK), **TOL)
        np.testing.assert_allclose(a @ a.T, np.eye(RANK), atol=1e-5)  # A = V^T: singular values on B
        # a rank-1 client reads the first component: the best rank-1 approximation of the full update
        low = with_rank(out, 1)
        np.testing.assert_allclose(np_(low[f"{m}.lora_B"]) @ np_(low[f"{m}.lora_A"]), best_rank(full, 1), **TOL)
    head = sum(pk * np_(u.params["head.weight"]) for pk, u in zip(p, updates, strict=True))
    np.testing.assert_allclose(np_(out["head.weight"]), head, rtol=1e-6, atol=1e-6)


def test_hetlora_one_round_against_the_rule() -> None:
    params, updates, scales = mixed_rank_updates()
    out = parse_method("hetlora").aggregate(params, updates, context(lora_scale=1.0))
    for m in MODULES:
        norms = np.linalg.norm(products(updates, m, scales), axis=(1, 2))
        p = norms / norms.sum()
        a = sum(pk * np_(u.params[f"{m}.lora_A"]) for pk, u in zip(p, updates, strict=True))
        b = sum(pk * (s / 1.0) * np_(u.params[f"{m}.lora_B"]) for pk, s, u in zip(p, scales, updates, strict=True))
        np.testing.assert_allclose(np_(out[f"{m}.lora_A"]), a, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np_(out[f"{m}.lora_B"]), b, rtol=1e-6, atol=1e-6)


def test_hetlora_gives_a_zero_adapter_no_weight() -> None:
    params, updates = make_updates()
    zero = dataclasses.replace(updates[0], params={k: torch.zeros_like(v) if k.endswith("lora_B") else v
                                                   for k, v in updates[0].params.items()})
    out = parse_method("hetlora").aggregate(params, [zero, *updates[1:]], context(lora_scale=SCALE))
    alone = parse_method("hetlora").aggregate(params, updates[1:], context(lora_scale=SCALE))
    for m in MODULES:
        torch.testing.assert_close(out[f"{m}.lora_A"], alone[f"{m}.lora_A"])
    every_zero = [dataclasses.replace(u, params={k: torch.zeros_like(v) for k, v in u.params.items()})
                  for u in updates]  # no client moved: sample weights, a defined (zero) result
    out = parse_method("hetlora").aggregate(params, every_zero, context(lora_scale=SCALE))
    assert all(bool(torch.isfinite(v).all()) for v in out.values())


@pytest.mark.parametrize("lam", [0.0, 0.01, 10.0])
def test_lora_fair_one_round_against_the_rule(lam: float) -> None:
    params, updates = make_updates()
    out = parse_method(f"lora_fair[lam={lam}]").aggregate(params, updates, context(lora_scale=SCALE))
    p = weights(updates)
    for m in MODULES:
        a_bar = sum(pk * np_(u.params[f"{m}.lora_A"]) for pk, u in zip(p, updates, strict=True))
        b_bar = sum(pk * np_(u.params[f"{m}.lora_B"]) for pk, u in zip(p, updates, strict=True))
        target = np.einsum("k,koi->oi", p, products(updates, m, [SCALE] * 3)) / SCALE
        system = a_bar @ a_bar.T + lam * np.eye(RANK)
        b_new = np.linalg.solve(system, (target @ a_bar.T + lam * b_bar).T).T
        np.testing.assert_allclose(np_(out[f"{m}.lora_A"]), a_bar, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np_(out[f"{m}.lora_B"]), b_new, **TOL)
        # the correction brings the product closer to the exact mean than FedAvg's B-bar A-bar
        if lam == 0.0:
            assert np.linalg.norm(target - b_new @ a_bar) <= np.linalg.norm(target - b_bar @ a_bar) + 1e-9


def test_lora_fair_refuses_mixed_ranks() -> None:
    assert not parse_method("lora_fair").aggregator.accepts_mixed_ranks()
    assert parse_method("flexlora").aggregator.accepts_mixed_ranks()
    assert parse_method("hetlora").aggregator.accepts_mixed_ranks()


@pytest.mark.parametrize("name", ["flexlora", "hetlora", "lora_fair"])
def test_one_client_and_identical_clients_keep_the_clients_model(name: str) -> None:
    """The merged product equals the clients' product (FlexLoRA re-factors it, so its factors differ)."""
    params, updates = make_updates(identical=True)
    for group in (updates[:1], updates):
        out = parse_method(name).aggregate(params, group, context(lora_scale=SCALE))
        for m in MODULES:
            got = np_(out[f"{m}.lora_B"]) @ np_(out[f"{m}.lora_A"])
            want = np_(group[0].params[f"{m}.lora_B"]) @ np_(group[0].params[f"{m}.lora_A"])
            np.testing.assert_allclose(got, want, **TOL)
        np.testing.assert_allclose(np_(out["head.bias"]), np_(group[0].params["head.bias"]), rtol=1e-6)


def test_zero_update_leaves_the_global_product() -> None:
    params, _ = make_updates()
    same = [ClientUpdate(k, 5 + k, torch.ones(4, dtype=torch.long), dict(params)) for k in range(3)]
    for name in ("flexlora", "hetlora", "lora_fair"):
        out = parse_method(name).aggregate(params, same, context(lora_scale=SCALE))
        for m in MODULES:
            np.testing.assert_allclose(np_(out[f"{m}.lora_B"]) @ np_(out[f"{m}.lora_A"]),
                                       np_(params[f"{m}.lora_B"]) @ np_(params[f"{m}.lora_A"]), **TOL)


@pytest.mark.parametrize("name", ["flexlora", "hetlora"])
def test_mixed_ranks_run_end_to_end(name: str, tmp_path, tiny_spec_values) -> None:
    """--client-ranks 1,2: the rank-1 client receives (and trains) only the first component of the global
    adapter, and the run finishes with finite accuracy."""
    import pandas as pd

    from livar_bench.config import make_spec
    from livar_bench.federation import run_federation

    spec = make_spec({**tiny_spec_values, "method": name, "client_ranks": (1, 2), "lora_alpha": 2.0})
    outcome = run_federation(spec, tmp_path)
    metrics = pd.read_csv(outcome.run_dir / "metrics.csv")
    acc = metrics[(metrics["split"] == "test") & (metrics["metric"] == "acc")]
    assert set(acc["round"]) == {0, 1, 2} and acc["value"].between(0, 1).all()
