"""Merges that weigh clients by statistics of their data: RegMean (input Gram matrices) and Fisher merging.

RegMean (Jin et al., ICLR 2023, arXiv 2212.09849, sec. 3.2-3.3). For a linear layer y = W x with client
weights W_k [out, in] and input Gram matrices G_k = X_k^T X_k [in, in] (X_k: the layer's inputs on client
k's data), the merged W minimises sum_k ||X_k W^T - X_k W_k^T||^2, whose solution is

    W^T = (sum_k G~_k)^{-1} sum_k G~_k W_k^T,      G~_k = alpha G_k + (1 - alpha) diag(G_k),

alpha < 1 shrinking the off-diagonal entries (the paper's regularisation, which also makes a singular G_k,
e.g. fewer input tokens than dimensions, invertible as long as its diagonal is positive). If the sum is
still singular (alpha = 1, or an input dimension that is zero on every client), the minimum-norm
least-squares solution (pseudo-inverse) is used, which keeps the clients' common part in the null space.

Fisher merging (Matena and Raffel, NeurIPS 2022, arXiv 2111.09832, eq. 2): with per-parameter diagonal
Fisher estimates F_k and client weights lambda_k,

    theta = sum_k lambda_k F_k theta_k / sum_k lambda_k F_k        (entry-wise),

``floor`` added to every F_k (FusionBench's ``minimal_fisher_weight``) so that an entry no client's Fisher
covers is the lambda-weighted mean rather than 0/0.
"""

from __future__ import annotations

import torch
from torch import Tensor

FISHER_FLOOR = 1e-6  # FusionBench's minimal_fisher_weight


def shrink_off_diagonal(gram: Tensor, alpha: float) -> Tensor:
    """alpha G + (1 - alpha) diag(G): off-diagonal entries times alpha, the diagonal unchanged ([..., n, n])."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    eye = torch.eye(gram.shape[-1], dtype=torch.bool, device=gram.device)
    return torch.where(eye, gram, alpha * gram)


def regmean(weights: Tensor, grams: Tensor, alpha: float) -> Tensor:
    """RegMean of linear weights [K, out, in] given the clients' input Gram matrices [K, in, in] -> [out, in].

    Computed in float64 with the pseudo-inverse of the regularised sum (its inverse when it has one).
    """
    w = weights.double()
    g = shrink_off_diagonal(grams.double(), alpha)  # [K, in, in]
    total = g.sum(0)  # [in, in]
    rhs = torch.einsum("kij,koj->io", g, w)  # sum_k G_k W_k^T  [in, out]
    # The pseudo-inverse of the symmetric PSD sum is its inverse when it is invertible and gives the
    # minimum-norm solution when it is not; a plain solve of a singular matrix returns finite garbage.
    solution = torch.linalg.pinv(total, hermitian=True) @ rhs
    return solution.T.contiguous()


def fisher_merge(params: Tensor, fishers: Tensor, weights: Tensor, floor: float = FISHER_FLOOR) -> Tensor:
    """Fisher-weighted mean of stacked parameters [K, *shape] with diagonal Fishers [K, *shape] and client
    weights [K] -> [*shape] (float64)."""
    p = params.double()
    f = fishers.double().clamp(min=0) + floor
    lam = weights.double().to(p.device).reshape(-1, *([1] * (p.dim() - 1)))
    return (lam * f * p).sum(0) / (lam * f).sum(0)
