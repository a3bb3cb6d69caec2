"""Merges of task matrices through their singular value decompositions: TSV-M, Iso-C and KnOTS.

Every function takes the clients' task matrices of one layer stacked on dimension 0, ``taus`` [K, out, in]
(dense updates, e.g. s_k B_k A_k - s B A of a LoRA module), and works in float64.

- TSV-M (Gargiulo et al., CVPR 2025, arXiv 2412.00081, "Task Singular Vectors"): keep each task's top
  ``int(n * (1 / K))`` singular triplets (n = min(out, in)), concatenate the kept U columns, singular values
  and V rows of all tasks, replace the concatenated U and V^T by their nearest orthogonal matrices (the polar
  factor P Q^T of X = P S Q^T) and multiply back: U_orth diag(S) V_orth^T.
- Iso-C (Marczak et al., ICML 2025, arXiv 2502.04959, "No Task Left Behind"): the SVD of the summed task
  matrices with every singular value replaced by their mean: mean(sigma) U V^T.
- KnOTS (Stoica et al., ICLR 2025, arXiv 2410.19735): the SVD of the column-wise concatenation
  [tau_1 | ... | tau_K] = U S [V_1^T | ... | V_K^T] gives one shared basis U and per-task coefficients
  S V_k^T [k, in] (the authors' ``s_on_V``), which an existing merge (TIES, a mean) combines; the merged
  matrix is U times the merged coefficients.

A LoRA task matrix has rank at most 2r, far below n. Its SVD's trailing singular vectors then belong to zero
singular values and are arbitrary (any orthonormal completion), so every function here keeps only the
*support* of a spectrum, the singular values above ``tol`` times the largest. On full-rank task matrices
this keeps everything and the functions agree with FusionBench (tests/ops/test_svd_merge.py); on
rank-deficient ones FusionBench's TSV-M lets the arbitrary vectors into the orthogonalisation and its Iso-C
spreads the mean over arbitrary null directions, both of which depend on the SVD routine, not the data.
"""

from __future__ import annotations

import torch
from torch import Tensor

from livar_bench.ops.linalg import svd

SUPPORT_TOL = 1e-9  # relative: singular values at or below tol * the largest are treated as zero
KNOTS_EPS = 1e-5  # absolute cut-off of the KnOTS authors' code (``s > 1e-5``)


def support(s: Tensor, tol: float = SUPPORT_TOL) -> int:
    """Number of singular values (sorted, descending) above ``tol`` times the largest (0 for a zero matrix)."""
    if s.numel() == 0 or float(s[0]) <= 0:
        return 0
    return int((s > tol * s[0]).sum())


def polar(x: Tensor, tol: float = SUPPORT_TOL) -> Tensor:
    """The orthogonal (polar) factor P Q^T of x = P S Q^T: the nearest matrix with orthonormal columns/rows.

    Over the support of S only: where x is rank-deficient (two clients with the same direction) the other
    singular pairs are arbitrary and would add arbitrary terms; with full rank this is the usual factor.
    """
    p, s, qh = svd(x)
    keep = support(s, tol)
    return p[:, :keep] @ qh[:keep]


def tsv_merge(taus: Tensor, tol: float = SUPPORT_TOL) -> Tensor:
    """TSV-M of task matrices [K, out, in] -> [out, in] (float64).

    Each task keeps ``min(int(n * (1 / K)), its support)`` singular triplets (FusionBench's count, n =
    min(out, in)); the kept U and V^T blocks are orthogonalised jointly and the singular values kept as they
    are. One task gives its own matrix back; K identical tasks give that matrix back too (their U blocks
    coincide, and the polar factor of [U ... U] is [U ... U] / sqrt(K)).
    """
    x = taus.double()
    k_tasks, out_dim, in_dim = x.shape
    per_task = int(min(out_dim, in_dim) * (1 / k_tasks))
    us, ss, vhs = [], [], []
    for tau in x:
        u, s, vh = svd(tau)
        keep = min(per_task, support(s, tol))
        us.append(u[:, :keep])
        ss.append(s[:keep])
        vhs.append(vh[:keep])
    s_all = torch.cat(ss)
    if s_all.numel() == 0:
        return torch.zeros(out_dim, in_dim, dtype=torch.float64, device=x.device)
    u_orth = polar(torch.cat(us, dim=1))  # [out, sum k]
    vh_orth = polar(torch.cat(vhs, dim=0))  # [sum k, in]
    return u_orth @ torch.diag(s_all) @ vh_orth


def iso_c(matrix: Tensor, tol: float = SUPPORT_TOL) -> Tensor:
    """Iso-C of one (summed or averaged) task matrix [out, in]: mean(sigma) U V^T over the spectrum's support.

    Pass the sum of the task matrices for the paper's form (FusionBench's ``iso_c``), or their mean for a
    step the size of the clients' average (Iso-C is homogeneous: iso_c(c M) = c iso_c(M) for c > 0).
    """
    m = matrix.double()
    u, s, vh = svd(m)
    keep = support(s, tol)
    if keep == 0:
        return torch.zeros_like(m)
    return s[:keep].mean() * (u[:, :keep] @ vh[:keep])


def knots_align(taus: Tensor, eps: float = KNOTS_EPS) -> tuple[Tensor, Tensor]:
    """KnOTS' shared basis: (U [out, k], coefficients [K, k, in]) with tau_i = U @ coefficients[i].

    From the SVD of [tau_1 | ... | tau_K] [out, K * in]; components with singular value <= ``eps`` are dropped
    (the authors' code); coefficients are S V_i^T, the singular values folded into V (``s_on_V``).
    """
    x = taus.double()
    k_tasks, out_dim, in_dim = x.shape
    joined = torch.cat(list(x), dim=1)  # [out, K * in]
    u, s, vh = svd(joined)
    keep = s > eps
    u, s, vh = u[:, keep], s[keep], vh[keep]  # [out, k], [k], [k, K * in]
    coeffs = (s[:, None] * vh).reshape(s.numel(), k_tasks, in_dim).transpose(0, 1)  # [K, k, in]
    return u, coeffs
