"""Maths of the client signals (the collectors in ``client/collectors/`` call it): class statistics."""

from __future__ import annotations

import torch
from torch import Tensor

from livar_bench.types import ClassStats


def class_statistics(
    features: Tensor, labels: Tensor, correct: Tensor, num_classes: int, with_cov: bool = False
) -> ClassStats:
    """Per-class count, mean and unbiased per-dimension variance of ``features`` [N, D].

    ``correct`` [N] bool marks samples the client's model classifies correctly; the ``*_correct`` fields
    use only those. Classes with fewer than two samples get zero variance (undefined otherwise).
    Computed in float64 via one-hot matrix products (no Python loop over classes).
    """
    f = features.double()
    onehot = torch.nn.functional.one_hot(labels, num_classes).double()  # [N, C]

    def moments(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        w = onehot * mask.double()[:, None]
        n = w.sum(0)  # [C]
        s1 = w.T @ f  # [C, D]
        s2 = w.T @ (f * f)
        mean = s1 / n.clamp(min=1)[:, None]
        var = (s2 - n[:, None] * mean * mean) / (n - 1).clamp(min=1)[:, None]
        var = torch.where((n >= 2)[:, None], var.clamp(min=0), torch.zeros_like(var))
        return n.long(), mean, var

    count, mean, var = moments(torch.ones_like(correct))
    count_c, _, var_c = moments(correct)
    cov = None
    if with_cov:
        d = f.shape[1]
        cov = torch.zeros(num_classes, d, d, dtype=torch.float32, device=f.device)
        for c in torch.nonzero(count >= 2).flatten().tolist():  # one D x D product per held class
            centred = f[labels == c] - mean[c]  # [n_c, D]
            cov[c] = (centred.T @ centred / (count[c] - 1)).float()
    return ClassStats(count=count, mean=mean.float(), var=var.float(), count_correct=count_c,
                      var_correct=var_c.float(), cov=cov)
