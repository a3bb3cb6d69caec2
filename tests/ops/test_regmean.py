"""RegMean and Fisher merging against independent computations: least squares on the raw inputs, the
normal equations, hand cases."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from livar_bench.ops.regmean import fisher_merge, regmean, shrink_off_diagonal


def inputs(seed: int, k: int, tokens: int, dim: int, out: int):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(tokens, dim)) for _ in range(k)]
    ws = [rng.normal(size=(out, dim)) for _ in range(k)]
    grams = np.stack([x.T @ x for x in xs])
    return xs, ws, grams


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 4), dim=st.integers(2, 6), out=st.integers(1, 5))
def test_regmean_at_alpha_1_is_the_least_squares_merge(seed, k, dim, out) -> None:
    """alpha = 1: the W minimising sum_k ||X_k W^T - X_k W_k^T||^2, solved by numpy's lstsq on the stacked
    raw inputs (never forming a Gram matrix)."""
    xs, ws, grams = inputs(seed, k, tokens=3 * dim, dim=dim, out=out)
    stacked_x = np.concatenate(xs)
    stacked_y = np.concatenate([x @ w.T for x, w in zip(xs, ws, strict=True)])
    expected = np.linalg.lstsq(stacked_x, stacked_y, rcond=None)[0].T
    got = regmean(torch.from_numpy(np.stack(ws)), torch.from_numpy(grams), alpha=1.0)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-8, atol=1e-8)


def test_regmean_by_hand() -> None:
    # 1-dimensional inputs: W = (a g1 w1 + a g2 w2) / (g1 + g2) with the diagonal untouched by alpha.
    got = regmean(torch.tensor([[[2.0]], [[5.0]]]), torch.tensor([[[1.0]], [[3.0]]]), alpha=0.5)
    torch.testing.assert_close(got, torch.tensor([[(2.0 * 1 + 5.0 * 3) / 4]], dtype=torch.float64))
    g = torch.tensor([[4.0, 2.0], [2.0, 3.0]])
    torch.testing.assert_close(shrink_off_diagonal(g, 0.25), torch.tensor([[4.0, 0.5], [0.5, 3.0]]))


def test_regmean_alpha_0_is_a_per_input_weighted_mean() -> None:
    # alpha = 0 keeps only diag(G): column j of W is the mean of the clients' columns weighted by G_k[j, j].
    xs, ws, grams = inputs(3, 3, tokens=10, dim=4, out=2)
    got = regmean(torch.from_numpy(np.stack(ws)), torch.from_numpy(grams), alpha=0.0).numpy()
    d = np.stack([np.diag(g) for g in grams])  # [K, in]
    expected = (np.stack(ws) * d[:, None, :]).sum(0) / d.sum(0)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_regmean_identical_clients_and_one_client_are_fixed_points() -> None:
    xs, ws, grams = inputs(4, 1, tokens=8, dim=5, out=3)
    w = torch.from_numpy(ws[0])
    torch.testing.assert_close(regmean(w[None], torch.from_numpy(grams), 0.9), w)
    torch.testing.assert_close(regmean(w.expand(3, -1, -1), torch.from_numpy(np.repeat(grams, 3, 0)), 0.9), w)


def test_regmean_with_singular_grams() -> None:
    """Two tokens in 6 dimensions: each G_k has rank 2. alpha < 1 makes the sum invertible (the paper's
    regularisation): the result solves the regularised normal equations exactly. At alpha = 1 the sum (rank 4)
    is singular: the minimum-norm solution, which still satisfies the normal equations."""
    xs, ws, grams = inputs(5, 2, tokens=2, dim=6, out=3)
    w, g = torch.from_numpy(np.stack(ws)), torch.from_numpy(grams)
    for alpha in (0.9, 1.0):
        got = regmean(w, g, alpha)
        assert bool(torch.isfinite(got).all())
        gt = shrink_off_diagonal(g, alpha)
        lhs = gt.sum(0) @ got.T
        rhs = sum(gt[k] @ w[k].T for k in range(2))
        torch.testing.assert_close(lhs, rhs, rtol=1e-8, atol=1e-8)
    full = regmean(w, g, 1.0)
    x = np.concatenate(xs)
    y = np.concatenate([xk @ wk.T for xk, wk in zip(xs, ws, strict=True)])
    np.testing.assert_allclose(full.numpy(), np.linalg.lstsq(x, y, rcond=None)[0].T, rtol=1e-8, atol=1e-8)


def test_fisher_merge_by_hand_and_properties() -> None:
    params = torch.tensor([[1.0, 4.0], [3.0, 0.0]])
    fishers = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    got = fisher_merge(params, fishers, torch.tensor([0.5, 0.5]), floor=0.0 + 1e-12)
    # entry 0: (1 * 1 + 3 * 3) / 4 = 2.5; entry 1: no Fisher anywhere -> the weighted mean 2
    torch.testing.assert_close(got, torch.tensor([2.5, 2.0], dtype=torch.float64))
    same = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fisher_merge(same[:1].expand(3, -1, -1), same.abs(), torch.ones(3)),
                               same[0].double())
    # equal Fishers: the lambda-weighted mean
    lam = torch.tensor([0.2, 0.3, 0.5])
    torch.testing.assert_close(fisher_merge(same, torch.ones_like(same), lam),
                               (lam[:, None, None].double() * same.double()).sum(0))
