"""Fitting a linear classifier head on feature tensors (CCVR's calibration step).

No modules, no loaders: the head is a (weight [C, D], bias [C]) pair and the data is a feature tensor,
so the step runs unchanged on CPU or GPU and is testable on tiny Gaussians.
"""

from __future__ import annotations

import torch
from torch import Tensor

# LogitNorm (Wei et al., 2022, arXiv 2205.09310): logits divided by their L2 norm times a temperature;
# the epsilon guards the division for an all-zero logit vector.
LOGIT_NORM_EPS = 1e-7


def logit_norm_cross_entropy(logits: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """Cross-entropy of ``logits / (temperature * ||logits||_2)`` (per row)."""
    norms = logits.norm(p=2, dim=-1, keepdim=True) + LOGIT_NORM_EPS
    return torch.nn.functional.cross_entropy(logits / (norms * temperature), targets)


def fit_linear_head(
    weight: Tensor,
    bias: Tensor,
    features: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    lr: float,
    momentum: float,
    batch_size: int,
    generator: torch.Generator,
    temperature: float | None = None,
) -> tuple[Tensor, Tensor]:
    """SGD with momentum on (weight, bias), starting from the given values; returns new tensors.

    Args:
        weight: [C, D] initial weights (not modified).
        bias: [C] initial bias (not modified).
        features: [N, D] training features.
        labels: [N] int64 targets.
        epochs: passes over the data, each in a fresh order drawn from ``generator``.
        lr: SGD learning rate.
        momentum: SGD momentum.
        batch_size: samples per step.
        generator: the only source of randomness (the data order).
        temperature: LogitNorm temperature; None for plain cross-entropy.

    Returns:
        (weight, bias) after training, float32, detached, on ``weight``'s device.
    """
    device = weight.device
    w = weight.detach().float().clone().requires_grad_(True)
    b = bias.detach().float().clone().requires_grad_(True)
    x = features.to(device=device, dtype=torch.float32)
    y = labels.to(device)
    optimizer = torch.optim.SGD([w, b], lr=lr, momentum=momentum)
    n = x.shape[0]
    with torch.enable_grad():  # the server step may be called under no_grad
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator, device=generator.device).to(device)
            for begin in range(0, n, batch_size):
                index = order[begin : begin + batch_size]
                logits = torch.nn.functional.linear(x[index], w, b)
                if temperature is None:
                    loss = torch.nn.functional.cross_entropy(logits, y[index])
                else:
                    loss = logit_norm_cross_entropy(logits, y[index], temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return w.detach(), b.detach()
