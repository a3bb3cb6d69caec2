"""LoRA maths of FlexLoRA, HetLoRA and LoRA-FAIR (pure functions on factor tensors).

- FlexLoRA (Bai et al., NeurIPS 2024, arXiv 2402.11505, sec. 3.2): the server forms the full-size update
  W_g = sum_k p_k B_k A_k, takes its SVD U S V^T and gives client k the rank-r_k factors B = U_{:r_k} S_{:r_k},
  A = V_{:r_k}^T (the singular values on B). Factors sorted by singular value make the truncation to any
  smaller rank a prefix of the columns of B / rows of A, which is how a client of rank r_k < r reads them.
- HetLoRA (Cho et al., EMNLP 2024, arXiv 2401.06432, sec. 3, "sparsity-weighted aggregation"): clients'
  factors zero-padded to the largest rank are averaged with weights proportional to the Frobenius norms of
  their updates, p_k = ||B_k A_k||_F / sum_j ||B_j A_j||_F; each client then truncates the result to its rank.
- LoRA-FAIR (Bian et al., ICCV 2025, arXiv 2411.14961, sec. 4): keep the averaged A-bar and correct the
  averaged B-bar by Delta B so that (B-bar + Delta B) A-bar is close to the mean of the client products
  Delta W = sum_k p_k B_k A_k, with a penalty on ||Delta B||. We solve the least-squares form in closed
  form: B' = argmin ||Delta W - B' A-bar||_F^2 + lam ||B' - B-bar||_F^2
  = (Delta W A-bar^T + lam B-bar)(A-bar A-bar^T + lam I)^{-1} (the paper states a general similarity
  metric and optimises it iteratively; baselines/lora_fair/README.md says what differs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from livar_bench.ops.linalg import svd


def svd_factors(delta: Tensor, rank: int, scale: float, split: str = "b") -> tuple[Tensor, Tensor]:
    """Rank-``rank`` factors (B [out, rank], A [rank, in]) with scale * B @ A the best rank-``rank``
    approximation of ``delta`` [out, in] (float64).

    ``split="b"`` puts the singular values on B (FlexLoRA: B = U S, A = V^T); ``"sqrt"`` splits them evenly
    (B = U S^1/2, A = S^1/2 V^T). Components beyond the matrix's rank are zero columns / rows.
    """
    if split not in ("b", "sqrt"):
        raise ValueError(f"split must be b or sqrt, got {split!r}")
    u, s, vh = svd(delta.double() / scale)
    k = min(rank, s.numel())
    b = torch.zeros(delta.shape[0], rank, dtype=torch.float64, device=delta.device)
    a = torch.zeros(rank, delta.shape[1], dtype=torch.float64, device=delta.device)
    if split == "b":
        b[:, :k] = u[:, :k] * s[:k]
        a[:k] = vh[:k]
    else:
        root = s[:k].sqrt()
        b[:, :k] = u[:, :k] * root
        a[:k] = root[:, None] * vh[:k]
    return b, a


def norm_weights(norms: Sequence[float] | Tensor, fallback: Tensor) -> Tensor:
    """HetLoRA's weights p_k = n_k / sum_j n_j from update norms [K]; ``fallback`` (normalised) when every
    norm is zero (no client moved), so that the merge stays defined."""
    n = torch.as_tensor(norms, dtype=torch.float64)
    total = float(n.sum())
    if not total > 0 or not torch.isfinite(n).all():
        fb = fallback.double()
        return fb / fb.sum()
    return n / total


def lora_fair_b(target: Tensor, a_bar: Tensor, b_bar: Tensor, lam: float) -> Tensor:
    """LoRA-FAIR's corrected B' = (target A^T + lam B-bar)(A A^T + lam I)^{-1} [out, r] (float64).

    ``target`` [out, in] is the mean client product in B-units (Delta W / s), ``a_bar`` [r, in] and ``b_bar``
    [out, r] the averaged factors. lam = 0 is the least-squares fit of the target on A-bar's row space
    (the pseudo-inverse where A-bar A-bar^T is singular); lam -> infinity leaves B-bar unchanged.
    """
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    a = a_bar.double()
    gram = a @ a.T  # [r, r]
    rhs = target.double() @ a.T + lam * b_bar.double()  # [out, r]
    system = gram + lam * torch.eye(gram.shape[0], dtype=torch.float64, device=a.device)
    # B' system = rhs with system symmetric PSD: B' = rhs pinv(system) (the inverse when lam > 0)
    return (rhs @ torch.linalg.pinv(system, hermitian=True)).contiguous()
