"""TSV-M, Iso-C and KnOTS maths against independent numpy computations of the papers' rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from livar_bench.ops.svd_merge import iso_c, knots_align, support, tsv_merge

TOL = dict(rtol=1e-9, atol=1e-10)  # float64 throughout: agreement to rounding


def np_polar(x: np.ndarray) -> np.ndarray:
    p, _, qh = np.linalg.svd(x, full_matrices=False)
    return p @ qh


def reference_tsv(taus: np.ndarray) -> np.ndarray:
    """TSV-M as the paper states it, for full-rank task matrices: top 1/K of each task's triplets,
    concatenated, U and V^T replaced by their polar factors, multiplied back."""
    k_tasks = taus.shape[0]
    keep = int(min(taus.shape[1:]) * (1 / k_tasks))
    us, ss, vhs = [], [], []
    for t in taus:
        u, s, vh = np.linalg.svd(t, full_matrices=False)
        us.append(u[:, :keep])
        ss.append(s[:keep])
        vhs.append(vh[:keep])
    return np_polar(np.concatenate(us, 1)) @ np.diag(np.concatenate(ss)) @ np_polar(np.concatenate(vhs, 0))


def reference_iso(matrix: np.ndarray) -> np.ndarray:
    u, s, vh = np.linalg.svd(matrix, full_matrices=False)
    return s.mean() * u @ vh


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 4), out=st.integers(4, 9), inp=st.integers(4, 9))
def test_tsv_matches_the_rule_on_full_rank_tasks(seed, k, out, inp) -> None:
    taus = np.random.default_rng(seed).normal(size=(k, out, inp))
    torch.testing.assert_close(tsv_merge(torch.from_numpy(taus)), torch.from_numpy(reference_tsv(taus)), **TOL)


def test_tsv_of_one_task_and_of_identical_tasks_is_that_task() -> None:
    g = torch.Generator().manual_seed(0)
    tau = torch.randn(6, 2, generator=g, dtype=torch.float64) @ torch.randn(2, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(tsv_merge(tau[None]), tau, **TOL)
    # two copies keep int(5 / 2) = 2 >= rank triplets each: the merge is the task itself (a fixed point)
    torch.testing.assert_close(tsv_merge(tau.expand(2, -1, -1)), tau, **TOL)
    # three copies keep int(5 / 3) = 1 triplet each: the merge is the task's best rank-1 approximation
    u, s, vh = torch.linalg.svd(tau)
    torch.testing.assert_close(tsv_merge(tau.expand(3, -1, -1)), s[0] * torch.outer(u[:, 0], vh[0]), **TOL)


def test_tsv_of_orthogonal_tasks_is_their_sum() -> None:
    # Tasks living in disjoint coordinate blocks are already orthogonal: TSV-M adds them exactly.
    a = torch.zeros(6, 6, dtype=torch.float64)
    b = torch.zeros(6, 6, dtype=torch.float64)
    a[:2, :2] = torch.tensor([[3.0, 1.0], [0.0, 2.0]])
    b[3:5, 3:5] = torch.tensor([[1.0, 0.0], [1.0, 4.0]])
    torch.testing.assert_close(tsv_merge(torch.stack([a, b])), a + b, **TOL)


def test_tsv_keeps_int_n_over_k_triplets_per_task() -> None:
    # 3 full-rank 4x4 tasks: int(4 / 3) = 1 triplet each, so the merge has rank 3 and its singular values are
    # the tasks' top singular values.
    taus = torch.from_numpy(np.random.default_rng(1).normal(size=(3, 4, 4)))
    merged = tsv_merge(taus)
    tops = sorted(float(torch.linalg.svdvals(t)[0]) for t in taus)
    got = sorted(torch.linalg.svdvals(merged).tolist())
    np.testing.assert_allclose(got[1:], tops, rtol=1e-9)
    assert got[0] < 1e-9


def test_iso_c_by_hand_and_against_the_rule() -> None:
    m = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(iso_c(m), 2.0 * torch.eye(2, dtype=torch.float64), **TOL)
    full = np.random.default_rng(2).normal(size=(5, 7))
    torch.testing.assert_close(iso_c(torch.from_numpy(full)), torch.from_numpy(reference_iso(full)), **TOL)


def test_iso_c_averages_over_the_support_of_a_low_rank_matrix() -> None:
    # rank 2 in 6 x 6: singular values (4, 2, 0, 0, 0, 0): the mean over the support is 3, over all 1.
    u = torch.linalg.qr(torch.randn(6, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)).Q
    m = u @ torch.diag(torch.tensor([4.0, 2.0], dtype=torch.float64)) @ u.T
    torch.testing.assert_close(iso_c(m), 3.0 * u @ u.T, **TOL)
    assert iso_c(torch.zeros(3, 3, dtype=torch.float64)).abs().max() == 0
    assert support(torch.tensor([2.0, 1e-12, 0.0], dtype=torch.float64)) == 1


def test_iso_c_is_homogeneous() -> None:
    m = torch.from_numpy(np.random.default_rng(4).normal(size=(4, 6)))
    torch.testing.assert_close(iso_c(3 * m), 3 * iso_c(m), **TOL)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 4), rank=st.integers(1, 3))
def test_knots_basis_reconstructs_every_task(seed, k, rank) -> None:
    rng = np.random.default_rng(seed)
    taus = np.stack([rng.normal(size=(7, rank)) @ rng.normal(size=(rank, 5)) for _ in range(k)])
    u, coeffs = knots_align(torch.from_numpy(taus))
    assert coeffs.shape[:2] == (k, u.shape[1]) and u.shape[1] <= min(7, k * rank)
    torch.testing.assert_close(u.T @ u, torch.eye(u.shape[1], dtype=torch.float64), **TOL)  # orthonormal basis
    for i in range(k):
        torch.testing.assert_close(u @ coeffs[i], torch.from_numpy(taus[i]), rtol=1e-9, atol=1e-9)


def test_knots_by_hand() -> None:
    # tau_1 = 2 e1 e1^T, tau_2 = 3 e2 e2^T (2 x 2): [tau_1 | tau_2] has singular values 3, 2 with U = (e2, e1);
    # coefficients S V_i^T: task 1 -> [[0, 0], [2, 0]], task 2 -> [[0, 3], [0, 0]] (up to the sign of each
    # singular pair, which U @ coefficients does not see).
    taus = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 3.0]]], dtype=torch.float64)
    u, coeffs = knots_align(taus)
    assert u.shape == (2, 2)
    np.testing.assert_allclose(np.abs(coeffs.numpy()), [[[0, 0], [2, 0]], [[0, 3], [0, 0]]], atol=1e-12)
    for i in range(2):
        torch.testing.assert_close(u @ coeffs[i], taus[i], **TOL)


@pytest.mark.parametrize("fn", [tsv_merge, lambda t: iso_c(t.sum(0))])
def test_zero_updates_merge_to_zero(fn) -> None:
    assert fn(torch.zeros(3, 4, 5, dtype=torch.float64)).abs().max() == 0
