"""Task-vector merging as named steps: trim -> elect -> disjoint merge (TIES, Yadav et al., 2023,
arXiv 2306.01708, sec. 3), of which task arithmetic (Ilharco et al., 2023, arXiv 2212.04089) is the
special case "keep everything, no election".

Every function works on the clients' task vectors stacked on dimension 0: ``taus`` has shape
[K, *shape], one parameter at a time or (``global_trim_mask``) all trainable tensors joined into one
vector per client [K, N]. Masks are explicit boolean tensors rather than "value is non-zero", so
that an entry a client really did not change (tau = 0) still counts as kept at density 1 and the
full-density, no-election merge is exactly the plain mean.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Reduce = Literal["mean", "sum"]


def trim_mask(taus: Tensor, density: float) -> Tensor:
    """Per client, keep the ``density`` fraction of entries with the largest magnitude (TIES step 1).

    PEFT's rule (``peft.utils.merge_utils.magnitude_based_pruning``): ``int(density * numel)`` entries
    (the floor) per client survive, chosen by ``topk``.

    Args:
        taus: [K, *shape] task vectors.
        density: fraction kept, in [0, 1].

    Returns:
        [K, *shape] bool mask of kept entries. Ties at the threshold are broken by ``topk``'s order,
        which is deterministic for a given input and device.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    k_clients = taus.shape[0]
    flat = taus.reshape(k_clients, -1)  # [K, n]
    n = flat.shape[1]
    keep = int(density * n)
    if density >= 1.0 or keep >= n:
        return torch.ones_like(taus, dtype=torch.bool)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep > 0:
        index = flat.abs().topk(keep, dim=1).indices  # [K, keep]
        mask.scatter_(1, index, True)
    return mask.reshape(taus.shape)


def magnitude_quantile(values: Tensor, q: float) -> Tensor:
    """Per row of ``values`` [K, n], the ``q``-quantile with linear interpolation (numpy's default
    method): sorted v, position p = q (n - 1), v[floor p] + (p - floor p)(v[floor p + 1] - v[floor p]).
    Computed from a sort, so there is no size limit (``torch.quantile`` refuses more than 2^24 entries).

    Returns:
        [K] float64 thresholds.
    """
    ordered = values.double().sort(dim=1).values
    n = ordered.shape[1]
    pos = q * (n - 1)
    lo = min(int(pos), n - 1)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return ordered[:, lo] + frac * (ordered[:, hi] - ordered[:, lo])


def global_trim_mask(flat_taus: Tensor, density: float) -> Tensor:
    """The LIVAR reference code's trim: one magnitude threshold per client over its whole update.

    ``flat_taus`` [K, N] holds each client's task vector over all trainable tensors joined into one
    vector. Client k keeps the entries with ``|tau| >= quantile(|tau_k|, 1 - density)`` (numpy's
    linear-interpolation quantile; entries below are zeroed). With distinct magnitudes that keeps
    ``n - ceil((1 - density)(n - 1))`` entries; equal magnitudes at the threshold are all kept.
    ``density=1`` keeps everything and ``density=0`` nothing.

    Returns:
        [K, N] bool mask.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    if density >= 1.0:
        return torch.ones_like(flat_taus, dtype=torch.bool)
    if density <= 0.0 or flat_taus.shape[1] == 0:
        return torch.zeros_like(flat_taus, dtype=torch.bool)
    magnitude = flat_taus.abs()
    threshold = magnitude_quantile(magnitude, 1.0 - density)  # [K]
    return magnitude.double() >= threshold[:, None]


def elect_sign(taus: Tensor, kept: Tensor, zero: Literal["positive", "none"] = "positive") -> Tensor:
    """Elected sign per entry: the sign of the summed kept values ("mass" election, TIES step 2).

    A zero sum elects +1 with ``zero="positive"`` (PEFT's rule), and no sign (0, so that no non-zero
    entry agrees and the merged entry is 0) with ``zero="none"`` (the LIVAR reference code's rule,
    which keeps only entries whose sum is strictly positive or strictly negative).

    Returns:
        [*shape] tensor of +1 / -1 (/ 0) in ``taus``' dtype.
    """
    total = (taus * kept).sum(dim=0)
    low = 0.0 if zero == "none" else 1.0
    sign = torch.where(total > 0, 1.0, torch.where(total < 0, -1.0, low))
    return sign.to(taus.dtype)


def agreeing_mask(taus: Tensor, kept: Tensor, sign: Tensor) -> Tensor:
    """Kept entries whose sign equals the elected one.

    As in the TIES paper, an exact zero has sign 0 and so agrees with neither sign: it neither adds to
    nor dilutes the disjoint mean.
    """
    return kept & (torch.sign(taus) == sign)


def disjoint_merge(taus: Tensor, contributing: Tensor, reduce: Reduce = "mean") -> Tensor:
    """Combine the contributing entries across clients (TIES step 3).

    ``reduce="mean"`` divides each entry by the number of clients contributing to it (TIES' disjoint
    mean; entries nobody contributes to are 0); ``reduce="sum"`` adds them (task arithmetic's sum).
    """
    total = (taus * contributing).sum(dim=0)
    if reduce == "sum":
        return total
    count = contributing.sum(dim=0).to(total.dtype)
    return total / count.clamp(min=1)


def merge_task_vectors(
    taus: Tensor, *, density: float = 1.0, sign_election: bool = False, reduce: Reduce = "mean",
    trim: Literal["tensor", "global"] = "tensor",
) -> Tensor:
    """trim -> (elect) -> disjoint merge of stacked task vectors [K, *shape] -> [*shape].

    ``trim="tensor"`` trims ``taus`` as one tensor (``trim_mask``, PEFT's floor count, a zero sum
    elects +); ``trim="global"`` expects ``taus`` [K, N] to be whole flattened client updates and uses
    the reference code's threshold (``global_trim_mask``; a zero sum elects no sign).
    With ``density=1`` and ``sign_election=False`` this is the plain mean (or sum) of the task vectors.
    """
    acc = taus.to(torch.float64 if taus.dtype == torch.float64 else torch.float32)
    kept = global_trim_mask(acc, density) if trim == "global" else trim_mask(acc, density)
    if sign_election:
        zero = "none" if trim == "global" else "positive"
        contributing = agreeing_mask(acc, kept, elect_sign(acc, kept, zero))
    else:
        contributing = kept
    return disjoint_merge(acc, contributing, reduce)
