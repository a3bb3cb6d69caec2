"""Local objectives beyond plain cross-entropy (which lives in methods/base.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from livar_bench.methods.base import Params


@dataclass(frozen=True)
class Proximal:
    """FedProx: cross-entropy + mu/2 * ||w - w_global||^2 over the client's trainable tensors.

    (Li et al., 2020, arXiv 1812.06127, eq. 2.) ``anchor`` holds the round's global tensors.
    """

    mu: float

    def __call__(self, logits: Tensor, targets: Tensor, params: Mapping[str, Tensor], anchor: Params) -> Tensor:
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        if self.mu == 0:
            return loss
        keys = list(params)
        diffs = torch._foreach_sub([params[k] for k in keys], [anchor[k] for k in keys])
        sq = torch.stack([d.pow(2).sum() for d in diffs]).sum()
        return loss + 0.5 * self.mu * sq
