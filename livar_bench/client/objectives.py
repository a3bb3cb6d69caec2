"""Client objectives: the loss a client minimises in local training (all of them live here).

A method picks its objective in its ``client_side()`` (``methods/client_side.py``); the client phase calls it as
``objective(logits, targets, params, anchor)`` with the live trainable tensors and the round's global
ones (the anchor of proximal terms).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from livar_bench.types import Params


@runtime_checkable
class LocalObjective(Protocol):
    """The client loss. ``params`` are the live trainable tensors, ``anchor`` the round's global ones."""

    def __call__(self, logits: Tensor, targets: Tensor, params: Mapping[str, Tensor], anchor: Params) -> Tensor: ...


@dataclass(frozen=True)
class CrossEntropy:
    """Plain cross-entropy, the local objective of every method but FedProx."""

    def __call__(self, logits: Tensor, targets: Tensor, params: Mapping[str, Tensor], anchor: Params) -> Tensor:
        return torch.nn.functional.cross_entropy(logits.float(), targets)


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


@runtime_checkable
class TakesInputs(Protocol):
    """An objective that reads per-client tensors the server sends with the start (``ClientSide.inputs``)."""

    def with_inputs(self, inputs: Params) -> LocalObjective: ...


@dataclass(frozen=True)
class ControlCorrected:
    """SCAFFOLD's corrected local step as a loss: cross-entropy + <c - c_i, w> (Karimireddy et al., 2020,
    arXiv 1910.06378, Algorithm 1 line 10: y <- y - eta_l (g_i(y) - c_i + c)).

    The gradient of <c - c_i, w> in w is c - c_i, so a gradient step on this loss is the corrected step,
    under any optimiser and in sequential and packed training alike. The linear term enters as
    ``t - t.detach()``: its value is exactly 0, so the reported loss is the cross-entropy, while its
    gradient is the correction. ``correction`` (key -> c - c_i, from the server) is None in the method's
    declaration and set per client by ``with_inputs``; keys without a correction are not corrected.
    """

    correction: Params | None = field(default=None, repr=False, compare=False)

    def with_inputs(self, inputs: Params) -> ControlCorrected:
        return ControlCorrected(correction=dict(inputs))

    def __call__(self, logits: Tensor, targets: Tensor, params: Mapping[str, Tensor], anchor: Params) -> Tensor:
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        if not self.correction:
            return loss
        terms = [(self.correction[k] * params[k]).sum() for k in params if k in self.correction]
        if not terms:
            return loss
        linear = torch.stack(terms).sum()
        return loss + (linear - linear.detach())
