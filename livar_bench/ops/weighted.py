"""Weighted means of tensors and of parameter dictionaries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


def normalise(weights: Tensor, fallback: Tensor | None = None) -> Tensor:
    """Weights divided by their sum; ``fallback`` (normalised) where the sum is not positive and finite.

    Args:
        weights: non-negative weights, any shape; normalised over the first dimension.
        fallback: used when a column sums to zero (e.g. every client has a zero weight).
    """
    weights = weights.to(torch.float64)
    total = weights.sum(dim=0, keepdim=True)
    ok = torch.isfinite(total) & (total > 0)
    normed = weights / torch.where(ok, total, torch.ones_like(total))
    if fallback is None:
        if not bool(ok.all()):
            raise ValueError("weights sum to zero and no fallback was given")
        return normed
    fb = fallback.to(torch.float64)
    fb = fb / fb.sum(dim=0, keepdim=True)
    return torch.where(ok, normed, fb.expand_as(normed) if fb.shape != normed.shape else fb)


def weighted_average(tensors: Sequence[Tensor], weights: Tensor) -> Tensor:
    """sum_k weights[k] * tensors[k], accumulated in float32 or wider, returned in the inputs' dtype.

    ``weights`` has one entry per tensor and is used as given (normalise it first for a mean).
    """
    if len(tensors) != len(weights):
        raise ValueError(f"{len(tensors)} tensors but {len(weights)} weights")
    dtype = tensors[0].dtype
    acc_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    stacked = torch.stack([t.to(acc_dtype) for t in tensors])  # [K, *shape]
    w = weights.to(device=stacked.device, dtype=acc_dtype).reshape(-1, *([1] * (stacked.dim() - 1)))
    return (w * stacked).sum(dim=0).to(dtype)


def weighted_average_params(
    params: Sequence[dict[str, Tensor]], weights: Tensor, keys: Iterable[str] | None = None
) -> dict[str, Tensor]:
    """Per-key weighted average of parameter dictionaries (over ``keys``, default all)."""
    names = list(keys) if keys is not None else list(params[0])
    return {name: weighted_average([p[name] for p in params], weights) for name in names}


def client_weights(num_samples: Sequence[int], how: str = "samples") -> Tensor:
    """Client weights of a mean: ``"samples"`` n_k / sum_j n_j (FedAvg's), ``"uniform"`` 1 / K."""
    if how == "uniform":
        k = len(num_samples)
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    if how != "samples":
        raise ValueError(f"client weights {how!r}: use samples or uniform")
    return sample_weights(num_samples)


def sample_weights(num_samples: Sequence[int]) -> Tensor:
    """FedAvg weights n_k / sum_j n_j."""
    counts = torch.tensor(list(num_samples), dtype=torch.float64)
    if (counts <= 0).any():
        raise ValueError("every client must have at least one sample")
    return counts / counts.sum()
