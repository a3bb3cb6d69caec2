"""CCVR: classifier calibration with virtual representations (Luo et al., 2021, arXiv 2106.05001).

A server stage that runs after any aggregator (``livar+ccvr``, ``ties+ccvr``; bare ``ccvr`` means
``fedavg+ccvr``):

1. pool the clients' per-class feature moments into one Gaussian per class (exact pooled mean and
   covariance, ``ops.gaussian.pool_moments``);
2. draw ``samples_per_class`` virtual features from each class present in the round, with
   ``ctx.generator``;
3. retrain only the classifier head on them, starting from the aggregated head.

Defaults follow the LIVAR authors' code base (PAPER.md): 256 samples per class, 5 epochs of SGD with
lr 0.01 and momentum 0.9 on logit-normalised cross-entropy with temperature 0.1. The batch size is not
given there; 64 is ours. ``cov="diag"`` uses per-dimension variances only: clients then send no D x D
matrices (the signal drops from CLASS_COV to CLASS_STATS), at the cost of ignoring correlations.
Features are pooled from all of a client's training samples of a class, after local training, with the
client's final model (the CCVR paper's description).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from livar_bench.methods.base import Stage
from livar_bench.ops.gaussian import covariance_factor, pool_moments, sample_gaussians, std_factor
from livar_bench.ops.head import fit_linear_head
from livar_bench.types import ClientUpdate, Params, RoundContext, Signal

# Reference-code settings (LIVAR authors' fed-mammoth code base, as summarised in PAPER.md).
REFERENCE_SAMPLES_PER_CLASS = 256
REFERENCE_EPOCHS = 5
REFERENCE_LR = 0.01
REFERENCE_MOMENTUM = 0.9
REFERENCE_TEMPERATURE = 0.1


@dataclass(frozen=True)
class CCVR(Stage):
    """Head calibration on virtual features sampled from pooled per-class Gaussians."""

    samples_per_class: int = REFERENCE_SAMPLES_PER_CLASS
    epochs: int = REFERENCE_EPOCHS
    lr: float = REFERENCE_LR
    momentum: float = REFERENCE_MOMENTUM
    batch_size: int = 64
    temperature: float = REFERENCE_TEMPERATURE
    logit_norm: bool = True
    cov: Literal["full", "diag"] = "full"

    def __post_init__(self) -> None:
        for name in ("samples_per_class", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.temperature <= 0:
            raise ValueError("lr and temperature must be positive")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.cov not in ("full", "diag"):
            raise ValueError(f"cov must be full or diag, got {self.cov!r}")

    @property
    def requires(self) -> frozenset[Signal]:
        return frozenset({Signal.CLASS_COV if self.cov == "full" else Signal.CLASS_STATS})

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        w_key, b_key = ctx.head_keys
        stats = [u.class_stats for u in updates]
        if any(s is None for s in stats) or (self.cov == "full" and any(s.cov is None for s in stats)):
            raise ValueError("CCVR needs per-class statistics (with covariances for cov=full) from every client")
        head_w, head_b = global_params[w_key], global_params[b_key]
        spread = [s.cov for s in stats] if self.cov == "full" else [s.var for s in stats]
        total, mean, cov = pool_moments([s.count for s in stats], [s.mean for s in stats], spread)
        present = torch.nonzero(total > 0).flatten()  # [P] classes some client holds
        out = dict(global_params)
        if present.numel() == 0:
            return out
        factors = covariance_factor(cov[present]) if self.cov == "full" else std_factor(cov[present])
        draws = sample_gaussians(mean[present].float(), factors.float(), self.samples_per_class, ctx.generator)
        features = draws.reshape(-1, draws.shape[-1])  # [P * S, D]
        labels = present.repeat_interleave(self.samples_per_class)  # class-major, matching the reshape
        weight, bias = fit_linear_head(
            head_w, head_b, features, labels, epochs=self.epochs, lr=self.lr, momentum=self.momentum,
            batch_size=self.batch_size, generator=ctx.generator,
            temperature=self.temperature if self.logit_norm else None,
        )
        out[w_key] = weight.to(head_w.dtype)
        out[b_key] = bias.to(head_b.dtype)
        return out
