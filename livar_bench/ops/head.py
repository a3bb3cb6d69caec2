"""Fitting a linear classifier head on feature tensors (CCVR's calibration step).

No modules, no loaders: the head is a (weight [C, D], bias [C]) pair and the data is a feature tensor,
so the step runs unchanged on CPU or GPU and is testable on tiny Gaussians.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

# LogitNorm (Wei et al., 2022, arXiv 2205.09310): logits divided by their L2 norm times a temperature.
# The epsilon is the LIVAR reference code's (added to the logits and to the norm), which guards the
# division for an all-zero logit vector.
LOGIT_NORM_EPS = 1e-12


def logit_norm_cross_entropy(logits: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """Cross-entropy of ``(logits + eps) / (||logits||_2 + eps) / temperature`` (per row)."""
    norms = logits.norm(p=2, dim=-1, keepdim=True)
    return torch.nn.functional.cross_entropy((logits + LOGIT_NORM_EPS) / (norms + LOGIT_NORM_EPS) / temperature, targets)


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
    schedule: Literal["const", "cosine"] = "const",
    redraw: Callable[[], tuple[Tensor, Tensor]] | None = None,
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
        schedule: "const" keeps ``lr``; "cosine" anneals it per epoch to 0 over ``epochs``
            (``torch.optim.lr_scheduler.CosineAnnealingLR`` with T_max = epochs, stepped after each epoch).
        redraw: when given, called before every epoch after the first for fresh (features, labels).

    Returns:
        (weight, bias) after training, float32, detached, on ``weight``'s device.
    """
    device = weight.device
    w = weight.detach().float().clone().requires_grad_(True)
    b = bias.detach().float().clone().requires_grad_(True)
    optimizer = torch.optim.SGD([w, b], lr=lr, momentum=momentum)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs) if schedule == "cosine" else None
    with torch.enable_grad():  # the server step may be called under no_grad
        for epoch in range(epochs):
            if epoch > 0 and redraw is not None:
                features, labels = redraw()
            x = features.to(device=device, dtype=torch.float32)
            y = labels.to(device)
            n = x.shape[0]
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
            if scheduler is not None:
                scheduler.step()
    return w.detach(), b.detach()
