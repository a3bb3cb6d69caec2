"""FlexLoRA's SVD factors, HetLoRA's norm weights and LoRA-FAIR's corrected B, from their formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from livar_bench.ops.lora_het import lora_fair_b, norm_weights, svd_factors


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), rank=st.integers(1, 6), split=st.sampled_from(["b", "sqrt"]),
       scale=st.sampled_from([0.5, 1.0, 4.0]))
def test_svd_factors_are_the_best_rank_r_approximation(seed, rank, split, scale) -> None:
    delta = np.random.default_rng(seed).normal(size=(6, 4))
    b, a = svd_factors(torch.from_numpy(delta), rank, scale, split)
    u, s, vh = np.linalg.svd(delta, full_matrices=False)
    k = min(rank, 4)
    best = (u[:, :k] * s[:k]) @ vh[:k]  # Eckart-Young
    np.testing.assert_allclose(scale * (b @ a).numpy(), best, rtol=1e-9, atol=1e-9)
    assert b.shape == (6, rank) and a.shape == (rank, 4)
    if split == "b":  # FlexLoRA: A = V^T has orthonormal rows, B = U S / scale
        np.testing.assert_allclose((a[:k] @ a[:k].T).numpy(), np.eye(k), atol=1e-10)
    # every prefix is the best approximation of that smaller rank (how a lower-rank client reads them)
    np.testing.assert_allclose(scale * (b[:, :1] @ a[:1]).numpy(), s[0] * np.outer(u[:, 0], vh[0]), atol=1e-9)


def test_norm_weights() -> None:
    torch.testing.assert_close(norm_weights([1.0, 3.0], torch.ones(2)), torch.tensor([0.25, 0.75], dtype=torch.float64))
    torch.testing.assert_close(norm_weights([0.0, 0.0], torch.tensor([1.0, 3.0])),
                               torch.tensor([0.25, 0.75], dtype=torch.float64))


def test_lora_fair_b_by_hand() -> None:
    # 1 x 1: B' = (t a + lam b) / (a^2 + lam)
    got = lora_fair_b(torch.tensor([[6.0]]), torch.tensor([[2.0]]), torch.tensor([[1.0]]), lam=0.5)
    torch.testing.assert_close(got, torch.tensor([[(6 * 2 + 0.5) / (4 + 0.5)]], dtype=torch.float64))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.sampled_from([0.0, 0.01, 1.0, 100.0]), rank=st.integers(1, 3))
def test_lora_fair_b_solves_its_least_squares_problem(seed, lam, rank) -> None:
    """Against numpy's lstsq of the stacked system [A^T; sqrt(lam) I] B'^T = [T^T; sqrt(lam) B^T]."""
    rng = np.random.default_rng(seed)
    target, a, b = rng.normal(size=(5, 7)), rng.normal(size=(rank, 7)), rng.normal(size=(5, rank))
    lhs = np.concatenate([a.T, np.sqrt(lam) * np.eye(rank)])
    rhs = np.concatenate([target.T, np.sqrt(lam) * b.T])
    expected = np.linalg.lstsq(lhs, rhs, rcond=None)[0].T
    got = lora_fair_b(torch.from_numpy(target), torch.from_numpy(a), torch.from_numpy(b), lam)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-8, atol=1e-8)


def test_lora_fair_b_exact_when_the_target_lies_in_a_bars_row_space() -> None:
    rng = np.random.default_rng(0)
    a, b_true = torch.from_numpy(rng.normal(size=(2, 6))), torch.from_numpy(rng.normal(size=(4, 2)))
    got = lora_fair_b(b_true @ a, a, torch.zeros(4, 2, dtype=torch.float64), lam=0.0)
    torch.testing.assert_close(got, b_true)
    # a singular A-bar (a zero row) at lam = 0: the pseudo-inverse, finite
    a0 = a.clone()
    a0[1] = 0
    assert bool(torch.isfinite(lora_fair_b(b_true @ a, a0, torch.zeros(4, 2, dtype=torch.float64), 0.0)).all())
    with pytest.raises(ValueError):
        lora_fair_b(b_true @ a, a, b_true, lam=-1.0)
