"""DARE, DARE-TIES, TSV-M, Iso-C and KnOTS as methods: one round against numpy computations of the
rules (independent of ops/), the presets' relations and the edge cases.

Tolerances: factor-space merges 1e-6 (float32 tensors, float32/64 arithmetic); product-space merges
compare products s B A, which come from float64 SVDs returned as float32 factors: 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from livar_bench.methods import parse_method
from livar_bench.types import ClientUpdate
from tests.methods._fakes import MODULES, RANK, context, make_updates

SCALE = 2.0
TOL = dict(rtol=1e-5, atol=1e-5)


def np_(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


def flat(params) -> np.ndarray:
    return np.concatenate([np_(v).reshape(-1) for v in params.values()])


def np_ties_disjoint(taus: np.ndarray) -> np.ndarray:
    """Sign of the sum (zero elects +), mean of the agreeing non-zero entries."""
    sign = np.where(taus.sum(0) >= 0, 1.0, -1.0)
    agree = (np.sign(taus) == sign) & (taus != 0)
    return (taus * agree).sum(0) / np.maximum(agree.sum(0), 1)


@pytest.mark.parametrize(("name", "drop", "lam"), [("dare", 0.5, 0.4), ("dare", 0.9, 1.0), ("dare_ties", 0.5, 0.4),
                                                   ("dare_ties", 0.3, 1.0)])
def test_dare_one_round_against_the_rule(name: str, drop: float, lam: float) -> None:
    params, updates = make_updates()
    out = parse_method(f"{name}[drop={drop},lam={lam}]").aggregate(params, updates[::-1], context(seed=4))
    start = flat(params)
    taus = np.stack([flat(u.params) for u in updates]) - start  # clients in id order
    draws = torch.rand(taus.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64).numpy()
    dropped = np.where(draws >= drop, taus / (1 - drop), 0.0)
    merged = dropped.mean(0) if name == "dare" else np_ties_disjoint(dropped)
    np.testing.assert_allclose(flat(out), start + lam * merged, rtol=1e-6, atol=1e-6)


def test_dare_without_dropping_is_task_arithmetic() -> None:
    params, updates = make_updates()
    for space in ("factors", "product"):
        ta = parse_method(f"task_arithmetic[space={space}]").aggregate(params, updates, context())
        dare = parse_method(f"dare[drop=0,space={space}]").aggregate(params, updates, context())
        for k in params:
            torch.testing.assert_close(dare[k], ta[k], rtol=1e-6, atol=1e-6)


def test_dare_masks_come_from_the_rounds_generator() -> None:
    params, updates = make_updates()
    a = parse_method("dare").aggregate(params, updates, context(seed=1))
    b = parse_method("dare").aggregate(params, updates, context(seed=1))
    c = parse_method("dare").aggregate(params, updates, context(seed=2))
    assert all(torch.equal(a[k], b[k]) for k in params) and any(not torch.equal(a[k], c[k]) for k in params)


def np_polar(x):
    p, s, qh = np.linalg.svd(x, full_matrices=False)
    k = int((s > 1e-9 * s[0]).sum())
    return p[:, :k] @ qh[:k]


def np_tsv(taus):
    keep = int(min(taus.shape[1:]) * (1 / taus.shape[0]))
    us, ss, vhs = [], [], []
    for t in taus:
        u, s, vh = np.linalg.svd(t, full_matrices=False)
        k = min(keep, int((s > 1e-9 * s[0]).sum()))
        us.append(u[:, :k]), ss.append(s[:k]), vhs.append(vh[:k])
    return np_polar(np.concatenate(us, 1)) @ np.diag(np.concatenate(ss)) @ np_polar(np.concatenate(vhs, 0))


def np_iso(m):
    u, s, vh = np.linalg.svd(m, full_matrices=False)
    k = int((s > 1e-9 * s[0]).sum())
    return s[:k].mean() * u[:, :k] @ vh[:k]


def best_rank(m, r):
    u, s, vh = np.linalg.svd(m, full_matrices=False)
    return (u[:, :r] * s[:r]) @ vh[:r]


def module_taus(params, updates, m):
    def prod(p):
        return SCALE * np_(p[f"{m}.lora_B"]) @ np_(p[f"{m}.lora_A"])
    start = prod(params)
    return start, np.stack([prod(u.params) for u in updates]) - start


@pytest.mark.parametrize("spec", ["tsv_m", "tsv_m[lam=0.5]", "iso_c", "iso_c[reduce=sum,lam=0.3]"])
def test_svd_merges_one_round_against_the_rule(spec: str) -> None:
    params, updates = make_updates()
    out = parse_method(spec).aggregate(params, updates, context(lora_scale=SCALE))
    method = parse_method(spec).aggregator
    for m in MODULES:
        start, taus = module_taus(params, updates, m)
        if spec.startswith("tsv_m"):
            merged = np_tsv(taus)
        else:
            merged = np_iso(taus.sum(0) if method.reduce == "sum" else taus.mean(0))
        want = best_rank(start + method.lam * merged, RANK)
        np.testing.assert_allclose(SCALE * np_(out[f"{m}.lora_B"]) @ np_(out[f"{m}.lora_A"]), want, **TOL)
    n = np.array([u.num_samples for u in updates], float)
    head = sum(w * np_(u.params["head.bias"]) for w, u in zip(n / n.sum(), updates, strict=True))
    np.testing.assert_allclose(np_(out["head.bias"]), head, rtol=1e-6)


@pytest.mark.parametrize("merge", ["ties", "mean"])
def test_knots_one_round_against_the_rule(merge: str) -> None:
    """Written from the authors' procedure: SVD of [tau_1 | ... | tau_K] per module, coefficients S V_i^T
    joined over modules per client, TIES (numpy quantile trim at 0.8, sign of the sum, agreeing mean) or a
    mean, U @ merged coefficients, scaled by 0.6 and added."""
    params, updates = make_updates()
    out = parse_method(f"knots[merge={merge}]").aggregate(params, updates, context(lora_scale=SCALE))
    bases, coeffs, starts = {}, {}, {}
    for m in MODULES:
        starts[m], taus = module_taus(params, updates, m)
        u, s, vh = np.linalg.svd(np.concatenate(list(taus), axis=1), full_matrices=False)
        keep = s > 1e-5
        bases[m] = u[:, keep]
        sv = s[keep, None] * vh[keep]
        coeffs[m] = np.stack(np.split(sv, len(updates), axis=1))  # [K, k, in]
    joined = np.concatenate([coeffs[m].reshape(len(updates), -1) for m in MODULES], axis=1)
    if merge == "ties":
        kept = joined.copy()
        for row in kept:
            row[np.abs(row) < np.quantile(np.abs(row), 0.8)] = 0
        total = kept.sum(0)
        sign = np.where(total > 0, 1.0, np.where(total < 0, -1.0, 0.0))
        agree = (np.sign(kept) == sign) & (kept != 0)
        merged = (kept * agree).sum(0) / np.maximum(agree.sum(0), 1)
    else:
        merged = joined.mean(0)
    offset = 0
    for m in MODULES:
        size = coeffs[m][0].size
        block = merged[offset : offset + size].reshape(coeffs[m].shape[1:])
        offset += size
        want = best_rank(starts[m] + 0.6 * bases[m] @ block, RANK)
        np.testing.assert_allclose(SCALE * np_(out[f"{m}.lora_B"]) @ np_(out[f"{m}.lora_A"]), want, **TOL)


@pytest.mark.parametrize("name", ["dare", "dare_ties", "tsv_m", "iso_c", "knots"])
def test_zero_updates_leave_the_global_model(name: str) -> None:
    params, _ = make_updates()
    same = [ClientUpdate(k, 5 + k, torch.ones(4, dtype=torch.long), dict(params)) for k in range(3)]
    out = parse_method(name).aggregate(params, same, context(lora_scale=SCALE))
    for m in MODULES:
        np.testing.assert_allclose(np_(out[f"{m}.lora_B"]) @ np_(out[f"{m}.lora_A"]),
                                   np_(params[f"{m}.lora_B"]) @ np_(params[f"{m}.lora_A"]), **TOL)


def test_tsv_m_of_one_client_is_that_client() -> None:
    params, updates = make_updates()
    out = parse_method("tsv_m").aggregate(params, updates[:1], context(lora_scale=SCALE))
    for m in MODULES:
        np.testing.assert_allclose(np_(out[f"{m}.lora_B"]) @ np_(out[f"{m}.lora_A"]),
                                   np_(updates[0].params[f"{m}.lora_B"]) @ np_(updates[0].params[f"{m}.lora_A"]),
                                   **TOL)


@pytest.mark.parametrize(("spec", "needle"), [("dare[drop=1]", "expected a number in [0, 1)"),
                                              ("knots[density=2]", "expected a number in [0, 1]"),
                                              ("iso_c[reduce=max]", "expected one of mean, sum"),
                                              ("lora_fair[lam=-1]", "expected a number in [0, inf)")])
def test_bad_hyperparameters_are_refused(spec: str, needle: str) -> None:
    from livar_bench.errors import BenchError

    with pytest.raises(BenchError, match=None) as info:
        parse_method(spec)
    assert needle in str(info.value)
