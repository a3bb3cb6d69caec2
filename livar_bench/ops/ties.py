"""Task-vector merging as named steps: trim -> elect -> disjoint merge (TIES, Yadav et al., 2023,
arXiv 2306.01708, sec. 3), of which task arithmetic (Ilharco et al., 2023, arXiv 2212.04089) is the
special case "keep everything, no election".

Every function works on one parameter at a time, with the clients' task vectors stacked on dimension 0:
``taus`` has shape [K, *shape]. Masks are explicit boolean tensors rather than "value is non-zero", so
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

    Args:
        taus: [K, *shape] task vectors.
        density: fraction kept, in [0, 1]; ``round(density * numel)`` entries per client survive.

    Returns:
        [K, *shape] bool mask of kept entries. Ties at the threshold are broken by ``topk``'s order,
        which is deterministic for a given input and device.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    k_clients = taus.shape[0]
    flat = taus.reshape(k_clients, -1)  # [K, n]
    n = flat.shape[1]
    keep = int(round(density * n))
    if keep >= n:
        return torch.ones_like(taus, dtype=torch.bool)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep > 0:
        index = flat.abs().topk(keep, dim=1).indices  # [K, keep]
        mask.scatter_(1, index, True)
    return mask.reshape(taus.shape)


def elect_sign(taus: Tensor, kept: Tensor) -> Tensor:
    """Elected sign per entry: the sign of the summed kept values ("mass" election, TIES step 2).

    A zero sum elects +1, so that every entry has a sign and the result is deterministic.

    Returns:
        [*shape] tensor of +1 / -1 in ``taus``' dtype.
    """
    total = (taus * kept).sum(dim=0)
    return torch.where(total >= 0, 1.0, -1.0).to(taus.dtype)


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
    taus: Tensor, *, density: float = 1.0, sign_election: bool = False, reduce: Reduce = "mean"
) -> Tensor:
    """trim -> (elect) -> disjoint merge of stacked task vectors [K, *shape] -> [*shape].

    With ``density=1`` and ``sign_election=False`` this is the plain mean (or sum) of the task vectors.
    """
    acc = taus.to(torch.float64 if taus.dtype == torch.float64 else torch.float32)
    kept = trim_mask(acc, density)
    if sign_election:
        contributing = agreeing_mask(acc, kept, elect_sign(acc, kept))
    else:
        contributing = kept
    return disjoint_merge(acc, contributing, reduce)
