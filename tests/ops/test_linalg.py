"""The SVD fallback: torch's result where LAPACK's gesdd converges, a correct SVD from gesvd where it does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from livar_bench.ops import linalg


def _matrix(seed: int, shape=(12, 7)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def test_converging_input_gives_torchs_factors_exactly() -> None:
    x = _matrix(0)
    expected = torch.linalg.svd(x, full_matrices=False)
    for got, want in zip(linalg.svd(x), expected, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("shape", [(12, 7), (5, 9), (6, 6)])
def test_gesdd_failure_falls_back_to_a_valid_svd(monkeypatch, shape) -> None:
    x = _matrix(1, shape)
    x[:, -1] = x[:, 0]  # rank-deficient: repeated directions, a zero singular value
    calls = []

    def fails(*args, **kwargs):
        calls.append(args)
        raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "svd", fails)
    u, s, vh = linalg.svd(x)
    assert calls, "the fallback must only run after torch's SVD failed"
    k = min(shape)
    assert u.shape == (shape[0], k) and s.shape == (k,) and vh.shape == (k, shape[1])
    assert u.dtype == x.dtype and s.dtype == x.dtype
    # An SVD: reconstructs x, orthonormal factors, singular values sorted, equal to numpy's
    assert torch.allclose(u @ torch.diag(s) @ vh, x, atol=1e-12)
    assert torch.allclose(u.T @ u, torch.eye(k, dtype=x.dtype), atol=1e-12)
    assert torch.allclose(vh @ vh.T, torch.eye(k, dtype=x.dtype), atol=1e-12)
    assert torch.all(s[:-1] >= s[1:])
    np.testing.assert_allclose(s.numpy(), np.linalg.svd(x.numpy(), compute_uv=False), atol=1e-12)


def test_merges_survive_a_gesdd_failure(monkeypatch) -> None:
    """Iso-C and TSV-M give the same merge through the fallback as through torch (up to rounding)."""
    from livar_bench.ops.svd_merge import iso_c, tsv_merge

    taus = torch.stack([_matrix(s, (8, 6)) for s in range(3)])
    want_iso, want_tsv = iso_c(taus.sum(0)), tsv_merge(taus)
    monkeypatch.setattr(torch.linalg, "svd", lambda *a, **k: (_ for _ in ()).throw(torch.linalg.LinAlgError("x")))
    assert torch.allclose(iso_c(taus.sum(0)), want_iso, atol=1e-10)
    assert torch.allclose(tsv_merge(taus), want_tsv, atol=1e-10)
