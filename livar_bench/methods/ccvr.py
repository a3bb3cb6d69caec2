"""CCVR: classifier calibration with virtual representations (Luo et al., 2021, arXiv 2106.05001).

A server stage that runs after any aggregator (``livar+ccvr``, ``ties+ccvr``; bare ``ccvr`` means
``fedavg+ccvr``): per-class Gaussians are built from client feature statistics, virtual features are
drawn from them with ``ctx.generator``, and only the classifier head is retrained on them, starting from
the aggregated head. Two sources disagree on almost every detail, so every choice is an option and
``preset`` picks a consistent set (explicit options override it):

``preset=reference`` (default; the LIVAR authors' fed-mammoth ``_models/ccvr.py``, whose numbers the
LIVAR paper reports):
- ``model=client_diag``: per class, a mixture of the clients' diagonal Gaussians N(mu_kc, diag(var_kc)
  + 1e-8 I), weighted by the clients' class counts; clients with a single sample of the class are left
  out (their variance is undefined);
- ``counts=multinomial``, ``resample_per_epoch=true``: every epoch draws fresh features, the per-class
  counts from a multinomial of ``samples_per_class`` x C draws over the C classes (classes nobody holds
  lose their draws), then each feature's mixture component with the clients' weights;
- SGD(lr 0.01, momentum 0.9), ``schedule=cosine`` (CosineAnnealingLR with T_max = epochs, stepped per
  epoch), 5 epochs, ``batch_size=256``, LogitNorm cross-entropy with temperature 0.1;
- ``when=every_round``, ``features=local``: calibrates after every round's aggregation, with statistics
  of each client's features under its own final local model.

``preset=paper`` (the CCVR paper): ``model=pooled_full`` (one Gaussian per class with the exact pooled
mean and covariance, ``ops.gaussian.pool_moments``), ``counts=fixed`` (``samples_per_class`` per class
present), drawn once (``resample_per_epoch=false``), plain cross-entropy (``logit_norm=false``),
``when=final`` (only after the last round) and ``features=global`` (statistics of the clients' data
under the final *global* model: one extra client round, asked of the engine through
``ctx.extra_round`` and counted in the cost columns). Sample count, optimiser, schedule and batch
size are the reference's: the paper's own values were not available to us (baselines/ccvr/README.md).

``model=pooled_diag`` is the pooled Gaussian with per-dimension variances only (clients send no D x D
matrices).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from livar_bench.methods.base import Stage
from livar_bench.methods.describe import describe
from livar_bench.ops.gaussian import covariance_factor, pool_moments, std_factor
from livar_bench.ops.head import fit_linear_head
from livar_bench.types import ClassStats, ClientUpdate, ExtraRound, Params, RoundContext, ServerState, Signal

# The reference adds 1e-8 to every variance (``MultivariateNormal(mean, diag(var) + 1e-8 I)``).
REFERENCE_VAR_EPS = 1e-8

PRESETS: dict[str, dict[str, Any]] = {
    "reference": dict(samples_per_class=256, epochs=5, lr=0.01, momentum=0.9, batch_size=256, schedule="cosine",
                      resample_per_epoch=True, counts="multinomial", model="client_diag", when="every_round",
                      features="local", temperature=0.1, logit_norm=True),
    "paper": dict(samples_per_class=256, epochs=5, lr=0.01, momentum=0.9, batch_size=256, schedule="cosine",
                  resample_per_epoch=False, counts="fixed", model="pooled_full", when="final", features="global",
                  temperature=0.1, logit_norm=False),
}

Draw = Callable[[], tuple[Tensor, Tensor]]



def extra_round_base_deltas(previous: ServerState, new: ServerState) -> Mapping[str, Tensor]:
    """The base-weight corrections the extra client round of ``features=global`` runs with: the one place
    they are chosen.

    The new state's: the pass must see the model the round evaluates and sends to clients, W0 + D' + s B'A'.
    Before issue 24 it used the round's previous corrections, so after a method that changes them in the
    round (FedEx-LoRA, FLoRA, LIVAR-Exact) the statistics came from the new factors on the old base weights
    (with FLoRA, whose new B is zero, from the model before this round's fold); those compositions have new
    run ids (``CCVR.content_digest``).
    """
    return new.base_deltas


def _option(description: str, **rules: Any) -> Any:
    """A setting that, left unset (None), takes the preset's value."""
    return Field(description=f"{description} (the preset's when unset)", **rules)


@describe("ccvr", paper="https://arxiv.org/abs/2106.05001", label="CCVR", order=50,
          summary="Retrain the head on virtual features drawn from per-class Gaussians of client feature statistics.")
class CCVR(Stage):
    """Head calibration on virtual features; unset options come from ``preset``."""

    def secure_aggregation(self) -> tuple[str, str]:
        return "individual", "its Gaussians come from each client's class statistics"

    preset: Annotated[Literal["reference", "paper"], Field(
        description="where the unset settings come from: the LIVAR authors' code (reference) or the CCVR paper "
                    "(paper)")] = "reference"
    samples_per_class: Annotated[int | None, _option("virtual features per class in one draw", ge=1)] = None
    epochs: Annotated[int | None, _option("epochs of head retraining", ge=1)] = None
    lr: Annotated[float | None, _option("SGD learning rate of head retraining", gt=0)] = None
    momentum: Annotated[float | None, _option("SGD momentum of head retraining", ge=0, lt=1)] = None
    batch_size: Annotated[int | None, _option("batch size of head retraining", ge=1)] = None
    schedule: Annotated[Literal["const", "cosine"] | None, _option(
        "learning-rate schedule of head retraining: constant, or cosine annealing over the epochs")] = None
    resample_per_epoch: Annotated[bool | None, _option("draw fresh virtual features every epoch, else once")] = None
    counts: Annotated[Literal["multinomial", "fixed"] | None, _option(
        "virtual features per class from a multinomial draw over all classes (multinomial), or samples_per_class "
        "for each class present (fixed)")] = None
    model: Annotated[Literal["pooled_full", "pooled_diag", "client_diag"] | None, _option(
        "one Gaussian per class with the pooled mean and full covariance (pooled_full) or per-dimension "
        "variances (pooled_diag), or per class a mixture of the clients' diagonal Gaussians (client_diag)")] = None
    when: Annotated[Literal["every_round", "final"] | None, _option(
        "calibrate after every round or only after the last one")] = None
    features: Annotated[Literal["local", "global"] | None, _option(
        "statistics of each client's features under its own final model (local), or under the global model "
        "from one extra client pass (global)")] = None
    temperature: Annotated[float | None, _option("LogitNorm temperature, used with logit_norm", gt=0)] = None
    logit_norm: Annotated[bool | None, _option("train the head with LogitNorm cross-entropy (else plain "
                                               "cross-entropy)")] = None
    preset_fields: ClassVar[tuple[str, ...]] = ("preset",)
    # 2 = the reference recipe by default (issue 13).
    recipe: ClassVar[int | None] = 2

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) is None:
                object.__setattr__(self, f.name, PRESETS[self.preset][f.name])

    @property
    def requires(self) -> frozenset[Signal]:
        if self.features == "global":  # statistics come from the extra pass over the global model
            return frozenset()
        return frozenset({Signal.CLASS_COV if self.model == "pooled_full" else Signal.CLASS_STATS})

    def check(self, method: Any) -> None:
        # features=global after a method that moves the base weights: the extra round's model changed with
        # issue 24 (extra_round_base_deltas), so those compositions get new run ids; every other keeps its id
        object.__setattr__(self, "_new_base", self.features == "global" and method.aggregator.moves_base_weights)

    def content_digest(self) -> str | None:
        return "extra-round-on-new-base" if getattr(self, "_new_base", False) else None

    def apply(self, previous: ServerState, new: ServerState, updates: Sequence[ClientUpdate],
              ctx: RoundContext) -> ServerState:
        return new.evolve(params=self.calibrate(new.params, updates, ctx, extra_round_base_deltas(previous, new)))

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        """``calibrate`` outside a server step (no state: the extra round runs without base corrections)."""
        return self.calibrate(global_params, updates, ctx, {})

    def calibrate(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext,
                  base_deltas: Mapping[str, Tensor]) -> Params:
        """The params with the head retrained on virtual features (``base_deltas``: those the extra client
        round of ``features=global`` runs with)."""
        if self.when == "final" and ctx.round != ctx.num_rounds:
            return dict(global_params)
        stats = self._statistics(global_params, updates, ctx, base_deltas)
        w_key, b_key = ctx.head_keys
        head_w, head_b = global_params[w_key], global_params[b_key]
        draw = self._sampler(stats, ctx.num_classes, ctx.generator)
        out = dict(global_params)
        if draw is None:  # no class has a usable Gaussian
            return out
        features, labels = draw()
        weight, bias = fit_linear_head(
            head_w, head_b, features, labels, epochs=self.epochs, lr=self.lr, momentum=self.momentum,
            batch_size=self.batch_size, generator=ctx.generator,
            temperature=self.temperature if self.logit_norm else None, schedule=self.schedule,
            redraw=draw if self.resample_per_epoch else None,
        )
        out[w_key] = weight.to(head_w.dtype)
        out[b_key] = bias.to(head_b.dtype)
        return out

    def _statistics(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext,
                    base_deltas: Mapping[str, Tensor]) -> list[ClassStats]:
        with_cov = self.model == "pooled_full"
        if self.features == "global":
            if ctx.extra_round is None:
                raise ValueError("ccvr[features=global] needs an engine that runs an extra client round "
                                 "(RoundContext.extra_round)")
            signals = frozenset({Signal.CLASS_COV if with_cov else Signal.CLASS_STATS})
            stats = [u.class_stats for u in ctx.extra_round(ExtraRound(global_params, signals, base_deltas))]
        else:
            stats = [u.class_stats for u in updates]
        if any(s is None for s in stats) or (with_cov and any(s.cov is None for s in stats)):
            raise ValueError("CCVR needs per-class statistics (with covariances for model=pooled_full) from every client")
        return stats

    def _class_counts(self, present: Tensor, generator: torch.Generator) -> Tensor:
        """Virtual features per class for one draw: [C] int64, zero for classes not ``present``."""
        c = present.shape[0]
        if self.counts == "fixed":
            counts = torch.full((c,), self.samples_per_class, dtype=torch.long, device=present.device)
        else:  # the reference: samples_per_class x C draws over all C classes, uniformly
            uniform = torch.ones(c, device=generator.device)
            picks = torch.multinomial(uniform, self.samples_per_class * c, replacement=True, generator=generator)
            counts = torch.bincount(picks, minlength=c).to(present.device)
        return counts * present

    def _sampler(self, stats: Sequence[ClassStats], num_classes: int, generator: torch.Generator) -> Draw | None:
        """A function drawing one set of (features [N, D] float32, labels [N]) from the class Gaussians."""
        if self.model == "client_diag":
            return self._client_mixture(stats, generator)
        spread = [s.cov for s in stats] if self.model == "pooled_full" else [s.var for s in stats]
        total, mean, cov = pool_moments([s.count for s in stats], [s.mean for s in stats], spread)
        present = total > 0  # [C]
        if not bool(present.any()):
            return None
        held = torch.nonzero(present).flatten()
        factors = torch.zeros_like(cov, dtype=torch.float32)
        factors[held] = (covariance_factor(cov[held]) if self.model == "pooled_full" else std_factor(cov[held])).float()
        mean = mean.float()

        def draw() -> tuple[Tensor, Tensor]:
            counts = self._class_counts(present, generator)
            labels = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
            z = torch.randn(len(labels), mean.shape[1], generator=generator, device=generator.device)
            z = z.to(mean.device)
            if self.model == "pooled_diag":
                return mean[labels] + z * factors[labels], labels
            feats = torch.empty_like(z)
            begin = 0
            for c in torch.nonzero(counts).flatten().tolist():  # one [n_c, D] x [D, D] product per class
                n = int(counts[c])
                feats[begin : begin + n] = mean[c] + z[begin : begin + n] @ factors[c].T
                begin += n
            return feats, labels

        return draw

    def _client_mixture(self, stats: Sequence[ClassStats], generator: torch.Generator) -> Draw | None:
        counts = torch.stack([s.count for s in stats]).double()  # [K, C]
        weights = counts * (counts > 1)  # single-sample holders are left out, as in the reference
        present = weights.sum(0) > 0  # [C]
        if not bool(present.any()):
            return None
        means = torch.stack([s.mean for s in stats]).float()  # [K, C, D]
        stds = (torch.stack([s.var for s in stats]).float().clamp(min=0) + REFERENCE_VAR_EPS).sqrt()
        mixture = weights.T.to(generator.device).float()  # [C, K] rows: the class's component weights

        def draw() -> tuple[Tensor, Tensor]:
            class_counts = self._class_counts(present, generator)
            labels = torch.repeat_interleave(torch.arange(len(class_counts), device=class_counts.device), class_counts)
            component = torch.multinomial(mixture[labels.to(generator.device)], 1, generator=generator).flatten()
            component = component.to(means.device)
            z = torch.randn(len(labels), means.shape[2], generator=generator, device=generator.device).to(means.device)
            labels = labels.to(means.device)
            return means[component, labels] + z * stds[component, labels], labels

        return draw
