"""Per-class Gaussians from client statistics: exact pooling of moments and seeded sampling (CCVR).

Pooling follows CCVR (Luo et al., 2021, arXiv 2106.05001, sec. 4, eqs. for the global mean and
covariance): with N_c = sum_k N_kc,

    mu_c    = sum_k (N_kc / N_c) mu_kc
    Sigma_c = sum_k (N_kc - 1)/(N_c - 1) Sigma_kc + sum_k N_kc/(N_c - 1) mu_kc mu_kc^T
              - N_c/(N_c - 1) mu_c mu_c^T

which equals the unbiased covariance of the union of the clients' features. Client covariances are the
unbiased ones (divided by N_kc - 1). Everything is computed in float64: the last two terms nearly
cancel when the means are large compared with the spread.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# Relative jitter added to the diagonal before the Cholesky factorisation; covariances of features from a
# LayerNorm output are often singular (D larger than the class's sample count).
CHOLESKY_JITTER = 1e-6


def pool_moments(counts: Sequence[Tensor], means: Sequence[Tensor], covs: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Pool per-client class moments into global ones.

    Args:
        counts: per client, [C] sample counts.
        means: per client, [C, D] class means.
        covs: per client, [C, D, D] unbiased class covariances, or [C, D] per-dimension variances (the
            diagonal case; the same formula holds entry by entry).

    Returns:
        (count [C] float64, mean [C, D] float64, cov [C, D, D] or [C, D] float64). Classes with a total
        count below two get a zero covariance (undefined otherwise).
    """
    n = torch.stack([c.to(torch.float64) for c in counts])  # [K, C]
    mu = torch.stack([m.to(torch.float64) for m in means])  # [K, C, D]
    sig = torch.stack([s.to(device=mu.device, dtype=torch.float64) for s in covs])  # [K, C, D(, D)]
    n = n.to(mu.device)
    total = n.sum(0)  # [C]
    mean = (n[..., None] * mu).sum(0) / total.clamp(min=1)[:, None]  # [C, D]
    denom = (total - 1).clamp(min=1)
    diag = sig.dim() == 3
    if diag:
        second = (n[..., None] * mu * mu).sum(0)  # [C, D]
        outer_mean = mean * mean
    else:
        second = torch.einsum("kc,kcd,kce->cde", n, mu, mu)  # sum_k N_kc mu mu^T
        outer_mean = mean[:, :, None] * mean[:, None, :]
    within = ((n - 1).clamp(min=0)[(...,) + (None,) * (sig.dim() - 2)] * sig).sum(0)
    shape = (-1,) + (1,) * (sig.dim() - 2)
    cov = (within + second - total.reshape(shape) * outer_mean) / denom.reshape(shape)
    cov = torch.where((total >= 2).reshape(shape), cov, torch.zeros_like(cov))
    if not diag:
        cov = 0.5 * (cov + cov.transpose(-1, -2))  # exact symmetry for the factorisation
    return total, mean, cov


def covariance_factor(cov: Tensor, jitter: float = CHOLESKY_JITTER) -> Tensor:
    """Matrices L with L L^T ~= cov, for sampling: Cholesky of cov + eps I, else an eigen square root.

    Args:
        cov: [..., D, D] symmetric covariances (batched over classes).
        jitter: eps relative to each matrix's mean diagonal (absolute where that diagonal is all zero).

    Returns:
        [..., D, D] lower-triangular (or eigen) factors.
    """
    d = cov.shape[-1]
    scale = cov.diagonal(dim1=-2, dim2=-1).mean(-1).clamp(min=0)  # [...]
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    factor, info = torch.linalg.cholesky_ex(cov + (jitter * scale)[..., None, None] * eye)
    # Not positive definite even with jitter (rounding can make a PSD matrix slightly indefinite): use
    # the eigen-decomposition with negative eigenvalues clipped to zero. One host read per call, not
    # per class; the fallback is rare.
    failed = info != 0
    if bool(failed.any()):
        values, vectors = torch.linalg.eigh(cov[failed])
        factor[failed] = vectors * values.clamp(min=0).sqrt()[..., None, :]
    return factor


def std_factor(var: Tensor) -> Tensor:
    """Per-dimension standard deviations from variances (the diagonal-covariance case)."""
    return var.clamp(min=0).sqrt()


def sample_gaussians(means: Tensor, factors: Tensor, num: int, generator: torch.Generator) -> Tensor:
    """``num`` draws from each N(mean_c, L_c L_c^T), in one batched call.

    Args:
        means: [C, D].
        factors: [C, D, D] from ``covariance_factor``, or per-dimension stds [C, D] from ``std_factor``.
        num: draws per Gaussian.
        generator: the only source of randomness; noise is drawn on its device, so the result depends
            only on its state.

    Returns:
        [C, num, D] samples in ``means``' dtype.
    """
    c, d = means.shape
    z = torch.randn(c, num, d, generator=generator, device=generator.device, dtype=means.dtype).to(means.device)
    if factors.dim() == 2:
        return means[:, None, :] + z * factors[:, None, :]
    return means[:, None, :] + z @ factors.transpose(-1, -2)
