"""Server-side update clipping: a stage that bounds how far one round moves the global model.

With x the global tensors before aggregation (``previous``) and x' after the aggregator (and any earlier
stage), the round's update u = x' - x is scaled so that its L2 norm over all trainable tensors is at most
``max_norm``:

    x_new = x + u * min(1, max_norm / ||u||_2)

The clipping step of DP-FedAvg's server (McMahan et al., 2018, arXiv 1710.06963) without the noise; it
needs the state from before aggregation, which every stage receives (``Stage.apply``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from livar_bench.methods.base import Stage
from livar_bench.types import ClientUpdate, RoundContext, ServerState


@dataclass(frozen=True)
class ClipUpdate(Stage):
    """Scale the round's global update to an L2 norm of at most ``max_norm``."""

    max_norm: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_norm) and self.max_norm > 0):
            raise ValueError(f"max_norm must be a positive number, got {self.max_norm}")

    def apply(self, previous: ServerState, new: ServerState, updates: Sequence[ClientUpdate],
              ctx: RoundContext) -> ServerState:
        steps = {k: new.params[k].double() - previous.params[k].double() for k in previous.params}
        norm = torch.sqrt(sum((s * s).sum() for s in steps.values()))
        factor = torch.clamp(self.max_norm / norm, max=1.0) if norm > 0 else torch.ones((), dtype=torch.float64)
        params = {k: (previous.params[k].double() + steps[k] * factor).to(previous.params[k].dtype) for k in steps}
        return new.evolve(params=params)
