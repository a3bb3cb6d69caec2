"""Signals a client computes for the server: LIVAR's path-integral importances and class statistics.

Everything stays on the device: the path-integral accumulator is updated with foreach kernels after
each optimiser step and read once per round.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from livar_bench.methods.base import ClassStats


class PathIntegralSignal:
    """S_f = sum over steps |sum over entries of grad * (theta_before - theta_after)| for each factor f.

    The Synaptic-Intelligence-style importance the LIVAR reference code accumulates per LoRA factor.
    Call ``before_step()`` after ``backward()`` and before ``optimizer.step()``, ``after_step()`` after it.
    With ``use_delta=False`` it accumulates |sum grad| instead (the reference code's other variant).
    """

    def __init__(self, keys: Sequence[str], params: Sequence[torch.nn.Parameter], use_delta: bool = True) -> None:
        self.keys = list(keys)
        self.params = list(params)
        self.use_delta = use_delta
        self._before = [torch.empty_like(p) for p in self.params]
        self.total = torch.zeros(len(self.params), device=self.params[0].device, dtype=torch.float32)

    @torch.no_grad()
    def before_step(self) -> None:
        if self.use_delta:
            torch._foreach_copy_(self._before, [p.detach() for p in self.params])

    @torch.no_grad()
    def after_step(self, grads: Sequence[Tensor]) -> None:
        if self.use_delta:
            delta = torch._foreach_sub(self._before, [p.detach() for p in self.params])
            prods = torch._foreach_mul(list(grads), delta)
        else:
            prods = list(grads)
        step = torch.stack([t.float().sum() for t in prods])
        self.total.add_(step.abs())

    def result(self) -> dict[str, Tensor]:
        """Factor key -> 0-dim signal tensor (still on the device)."""
        return dict(zip(self.keys, self.total.unbind(0), strict=True))


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
