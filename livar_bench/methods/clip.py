"""Server-side update clipping: a stage that bounds how far one round moves the global model.

With x the global tensors before aggregation (``previous``) and x' after the aggregator (and any earlier
stage), the round's update u = x' - x is scaled so that its L2 norm over all trainable tensors is at most
``max_norm``:

    x_new = x + u * min(1, max_norm / ||u||_2)

The clipping step of DP-FedAvg's server (McMahan et al., 2018, arXiv 1710.06963) without the noise; it
needs the state from before aggregation, which every stage receives (``Stage.apply``).

After an aggregator that moves the base weights (``Aggregator.moves_base_weights``: FedEx-LoRA, FLoRA,
LIVAR-Exact) the global model is W0 + D + s B A, and bounding the trainable tensors alone would let the
residual D pass unclipped (or, with FLoRA, clip a freshly drawn A into a blend of old and new). There the
stage clips the *effective* update: per LoRA module Delta_m = (D'_m + s B'_m A'_m) - (D_m + s B_m A_m),
together with the head's step, in one L2 norm; the new factors B', A' are kept as the aggregator made them
and the clip goes into the base correction, D_new = D' - (1 - c) Delta_m, so the model moves by exactly
c = min(1, max_norm / ||Delta||) times its update. After a server optimiser with moments
(``Aggregator.server_moments``: FedAvgM, FedAdam, FedYogi, FedAdagrad, FedAMS) the stage is refused: the
moments have already taken the unclipped step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field

from livar_bench.methods.base import Method, Stage
from livar_bench.methods.describe import describe
from livar_bench.ops.lora import factor_keys, is_lora_key, lora_modules
from livar_bench.types import ClientUpdate, RoundContext, ServerState


@describe("clip", paper="https://arxiv.org/abs/1710.06963", label="Clip", order=60,
          summary="Scale the round's global update to an L2 norm of at most max_norm.")
class ClipUpdate(Stage):
    """Scale the round's global update to an L2 norm of at most ``max_norm``."""

    max_norm: Annotated[float, Field(gt=0, description="largest L2 norm of one round's global update (over all "
                                                        "trainable tensors together)")] = 1.0

    def check(self, method: Method) -> None:
        aggregator = method.aggregator
        if aggregator.server_moments:
            name = aggregator.slot.name
            raise ValueError(f"clip cannot follow {name}: {name}'s server momentum or moments have already taken the "
                             f"round's unclipped step, so clipping its output leaves them out of step with the "
                             f"model; bound the step with {name}'s own eta instead")
        # the composition decides what is clipped (and so the numbers): part of the run id when it is not the
        # trainable tensors alone (content_digest), so ids of runs made before this existed stay unchanged
        object.__setattr__(self, "_effective", aggregator.moves_base_weights)

    def content_digest(self) -> str | None:
        return "effective-update" if getattr(self, "_effective", False) else None

    def apply(self, previous: ServerState, new: ServerState, updates: Sequence[ClientUpdate],
              ctx: RoundContext) -> ServerState:
        if getattr(self, "_effective", False):
            return self._clip_effective(previous, new, ctx)
        steps = {k: new.params[k].double() - previous.params[k].double() for k in previous.params}
        norm = torch.sqrt(sum((s * s).sum() for s in steps.values()))
        factor = torch.clamp(self.max_norm / norm, max=1.0) if norm > 0 else torch.ones((), dtype=torch.float64)
        params = {k: (previous.params[k].double() + steps[k] * factor).to(previous.params[k].dtype) for k in steps}
        return new.evolve(params=params)

    def _clip_effective(self, previous: ServerState, new: ServerState, ctx: RoundContext) -> ServerState:
        """Clip W0 + D + s B A (and the head) as one update; the clip goes into the base correction D."""

        def effective(state: ServerState, module: str) -> torch.Tensor:  # D_m + s B_m A_m, [out, in] float64
            a_key, b_key = factor_keys(module)
            product = state.params[b_key].double() @ state.params[a_key].double() * ctx.lora_scale
            base = state.base_deltas.get(module)
            return product if base is None else product + base.double()

        modules = lora_modules(previous.params)
        moved = {m: effective(new, m) - effective(previous, m) for m in modules}
        steps = {k: new.params[k].double() - previous.params[k].double() for k in previous.params if not is_lora_key(k)}
        norm = torch.sqrt(sum((t * t).sum() for t in [*moved.values(), *steps.values()]))
        factor = torch.clamp(self.max_norm / norm, max=1.0) if norm > 0 else torch.ones((), dtype=torch.float64)
        if factor >= 1:
            return new
        params = dict(new.params)
        for k, step in steps.items():
            params[k] = (previous.params[k].double() + step * factor).to(previous.params[k].dtype)
        deltas = dict(new.base_deltas)
        for m, delta in moved.items():
            base = new.base_deltas.get(m)
            kept = -(1 - factor) * delta if base is None else base.double() - (1 - factor) * delta
            deltas[m] = kept.to(base.dtype if base is not None else torch.float32)
        return new.evolve(params=params, base_deltas=deltas)
