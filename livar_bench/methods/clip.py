"""Server-side update clipping: a stage that bounds how far one round moves the global model.

With x the global tensors before aggregation (``previous``) and x' after the aggregator (and any earlier
stage), the round's update u = x' - x is scaled so that its L2 norm over all trainable tensors is at most
``max_norm``:

    x_new = x + u * min(1, max_norm / ||u||_2)

The clipping step of DP-FedAvg's server (McMahan et al., 2018, arXiv 1710.06963) without the noise; it
needs the state from before aggregation, which every stage receives (``Stage.apply``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field

from livar_bench.methods.base import Stage
from livar_bench.methods.describe import describe
from livar_bench.types import ClientUpdate, RoundContext, ServerState


@describe("clip", paper="https://arxiv.org/abs/1710.06963", label="Clip", order=60,
          summary="Scale the round's global update to an L2 norm of at most max_norm.")
class ClipUpdate(Stage):
    """Scale the round's global update to an L2 norm of at most ``max_norm``."""

    max_norm: Annotated[float, Field(gt=0, description="largest L2 norm of one round's global update (over all "
                                                        "trainable tensors together)")] = 1.0

    def apply(self, previous: ServerState, new: ServerState, updates: Sequence[ClientUpdate],
              ctx: RoundContext) -> ServerState:
        steps = {k: new.params[k].double() - previous.params[k].double() for k in previous.params}
        norm = torch.sqrt(sum((s * s).sum() for s in steps.values()))
        factor = torch.clamp(self.max_norm / norm, max=1.0) if norm > 0 else torch.ones((), dtype=torch.float64)
        params = {k: (previous.params[k].double() + steps[k] * factor).to(previous.params[k].dtype) for k in steps}
        return new.evolve(params=params)
