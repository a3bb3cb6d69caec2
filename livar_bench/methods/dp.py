"""``dp``: client-level differential privacy for any method (``livar+dp[sigma=1.0,clip=1.0]``).

The component wraps what clients release, before any server step, the way Flower's DP strategies wrap
a strategy (``DifferentialPrivacyServerSideFixedClipping``): each client's update (LoRA factors and head
minus the round's global tensors; keys the method freezes are not released) is clipped to an L2 bound C
and gets Gaussian noise of multiplier sigma, every signal the method uses is clipped and noised with its
own bound and multiplier, and client weights become public (uniform). The method's server step, its
stages included, then only post-processes private inputs (``privacy/rounds.py``), which is why ``dp`` is
written last and acts first: ``fedavg+ccvr+dp`` privatises what the clients send, then runs FedAvg and
CCVR on it.

Noise (``noise``): ``central`` (a trusted server adds N(0, (sigma C)^2) to the sum) and ``distributed``
(each client adds its 1/n share; private with secure aggregation) need a method whose server uses only
the sum of the updates (``Aggregator.secure_aggregation``); ``local`` (each client adds the full noise to
what it sends) works for every method. ``auto`` (default) is central when the method allows it, else local.

Clipping: fixed at ``clip``, or ``adaptive`` (Andrew et al. 2021): the bound starts at ``clip`` and moves
towards the ``quantile`` of the update norms by geometric steps of ``clip_lr``, from a noisy count of
unclipped clients (noise std ``count_std``, default m/20 for m clients per round as in the paper); the
bound is server state (``ServerState.buffers``), so a resumed run continues exactly.

Accounting (``privacy/accountant.py``): one Gaussian per round with the joint multiplier of everything
released, the round's event from the client sampling (every client, Poisson, or a fixed number without
replacement; local noise: no amplification), composed over rounds by RDP; epsilon at ``delta`` after each
round goes to the tidy rows (split ``privacy``). ``epsilon`` instead of ``sigma``: sigma is calibrated
before the run to meet it after the last round.

``sigma=0`` without ``clip`` releases everything as it is: the method unchanged, bit for bit (epsilon inf).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field

from livar_bench.methods.base import Stage
from livar_bench.methods.describe import describe
from livar_bench.privacy import (
    PrivacyModel,
    QuantileClip,
    calibrate_sigma,
    class_stats_parts,
    epsilons,
    joint_with,
)
from livar_bench.privacy.rounds import RoundPrivacy, privatise
from livar_bench.types import ClientUpdate, RoundContext, ServerState, Signal, needs_class_stats

CLIP_BUFFER = "clip"  # the adaptive bound, [] float64, under the component's namespace


@describe("dp", paper="https://arxiv.org/abs/1710.06963", label="DP", order=65,
          summary="Client-level differential privacy: clip and noise every client release, with an accountant "
                  "(epsilon rows, split privacy).")
class DP(Stage):
    """Clip and noise everything clients release; account for it."""

    last: ClassVar[bool] = True

    sigma: Annotated[float, Field(ge=0, description="noise multiplier of the update: noise std / clip (0 with "
                                                     "clip=none: the method unchanged)")] = 1.0
    epsilon: Annotated[float | None, Field(gt=0, description="target epsilon after the last round: sigma is "
                                                              "calibrated to it before the run (leave sigma unset)")] = None
    delta: Annotated[float, Field(gt=0, lt=1, description="delta of the (epsilon, delta) guarantee")] = 1e-5
    clip: Annotated[float | None, Field(gt=0, description="L2 bound C of each client's update (LoRA factors and "
                                                           "head together), its sensitivity (none: no clipping)")] = 1.0
    adaptive: Annotated[bool, Field(description="adaptive clipping (Andrew et al. 2021): C starts at clip and "
                                                "follows the quantile of the update norms")] = False
    quantile: Annotated[float, Field(gt=0, lt=1, description="adaptive clipping: target fraction of unclipped "
                                                              "updates")] = 0.5
    clip_lr: Annotated[float, Field(gt=0, description="adaptive clipping: geometric step of C per unit of "
                                                       "(unclipped fraction - quantile)")] = 0.2
    count_std: Annotated[float | None, Field(gt=0, description="adaptive clipping: noise std of the unclipped "
                                                                "count (none: clients per round / 20)")] = None
    noise: Annotated[Literal["auto", "central", "distributed", "local"], Field(
        description="where the noise is drawn: central (server, on the sum), distributed (clients, 1/n of the "
                    "variance each), local (clients, all of it), auto (central if the method needs only the sum, "
                    "else local)")] = "auto"
    stats_sigma: Annotated[float | None, Field(ge=0, description="noise multiplier of each class-statistics "
                                                                  "part (none: sigma)")] = None
    stats_clip: Annotated[float, Field(gt=0, description="Frobenius bound of each class-statistics feature part "
                                                          "(means, variances, covariances)")] = 100.0
    count_clip: Annotated[float, Field(gt=0, description="L2 bound of a client's class counts")] = 100.0
    signal_sigma: Annotated[float | None, Field(ge=0, description="noise multiplier of LIVAR's signals (none: "
                                                                   "sigma)")] = None
    signal_clip: Annotated[float, Field(gt=0, description="L2 bound of a client's vector of LIVAR signals")] = 0.5

    def __post_init__(self) -> None:
        if self.clip is None and (self.sigma > 0 or self.epsilon is not None or self.adaptive):
            raise ValueError("noise needs a clipping bound (its sensitivity): give clip=C, e.g. dp[clip=1.0]")
        if self.epsilon is not None and self.sigma != 1.0:
            raise ValueError("give sigma or epsilon, not both (with epsilon, sigma is calibrated)")

    @property
    def passthrough(self) -> bool:
        """Nothing is clipped or noised: the method's releases as they are."""
        return self.sigma == 0 and self.epsilon is None and self.clip is None

    # --- what a run releases -----------------------------------------------------------------------------

    def releases(self, requires: frozenset[Signal], per_round: int) -> tuple[int, dict[str, float]]:
        """(releases tied to sigma, name -> multiplier of those with their own) of one round."""
        tied, fixed = 1, {}
        if self.adaptive:
            fixed["clip count"] = 2.0 * self.count_std_for(per_round)
        parts: list[tuple[str, float | None]] = []
        if needs_class_stats(requires):
            parts += [(f"class statistics ({p})", self.stats_sigma)
                      for p in class_stats_parts(Signal.CLASS_COV in requires)]
        if Signal.LORA_SIGNAL in requires:
            parts.append(("LIVAR signals", self.signal_sigma))
        for name, multiplier in parts:
            if multiplier is None:
                tied += 1
            else:
                fixed[name] = multiplier
        return tied, fixed

    def count_std_for(self, per_round: int) -> float:
        return self.count_std if self.count_std is not None else per_round / 20.0

    def resolved_sigma(self, model: PrivacyModel, rounds: int, requires: frozenset[Signal]) -> float:
        """sigma, or the one calibrated for ``epsilon`` after ``rounds`` rounds."""
        if self.epsilon is None:
            return self.sigma
        tied, fixed = self.releases(requires, model.sampled)
        return _calibrated(self.epsilon, self.delta, rounds, model, tied, tuple(sorted(fixed.items())))

    def report(self, model: PrivacyModel, rounds: int, requires: frozenset[Signal]) -> list[dict[str, float]]:
        """Per round 1..rounds: epsilon (at ``delta``), the update's sigma, the joint multiplier, delta."""
        sigma = self.resolved_sigma(model, rounds, requires)
        tied, fixed = self.releases(requires, model.sampled)
        joint = joint_with(sigma, tied, fixed) if not self.passthrough else 0.0
        values = epsilons(model, [joint] * rounds, self.delta)
        return [{"epsilon": e, "sigma": sigma, "noise_multiplier": joint, "delta": self.delta} for e in values]

    # --- the round ------------------------------------------------------------------------------------------

    def before(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext,
               method: Any) -> tuple[ServerState, list[ClientUpdate]]:
        """The private updates of the round (and, with adaptive clipping, the next round's bound in the state)."""
        if self.passthrough:
            return state, list(updates)
        model = privacy_model(ctx, self.noise_placement(method) == "local")
        sigma = self.resolved_sigma(model, ctx.num_rounds, method.requires)
        key = f"{self.namespace}.{CLIP_BUFFER}"
        bound = float(state.buffers[key]) if self.adaptive and key in state.buffers else float(self.clip)
        frozen = method.frozen_keys(list(state.params), ctx.round)
        requires = method.requires
        stats_sigma = sigma if self.stats_sigma is None else self.stats_sigma
        signal_sigma = sigma if self.signal_sigma is None else self.signal_sigma
        setting = RoundPrivacy(
            sigma=sigma, bound=bound, placement=self.noise_placement(method),
            keys=tuple(sorted(k for k in state.params if k not in frozen)),  # the order noise is drawn in
            stats=(self.count_clip, self.stats_clip, stats_sigma) if needs_class_stats(requires) else None,
            signal=(self.signal_clip, signal_sigma) if Signal.LORA_SIGNAL in requires else None)
        private, norms = privatise(state.params, updates, setting, ctx.generator)
        if self.adaptive:
            per_round = model.sampled if model.scheme == "poisson" else len(updates)
            clip = QuantileClip(self.quantile, self.clip_lr, self.count_std_for(model.sampled))
            bound, _ = clip.next_bound(bound, norms, per_round, ctx.generator)
            state = state.evolve(buffers={**state.buffers, key: torch.tensor(bound, dtype=torch.float64)})
        return state, private

    def noise_placement(self, method: Any) -> str:
        """Where the update's noise is drawn (signals are always noised by each client, ``privacy.rounds``)."""
        kind, reason = method.aggregator.secure_aggregation()
        if self.noise == "auto":
            return "central" if kind == "sum" else "local"
        if self.noise != "local" and kind != "sum":
            raise ValueError(f"dp[noise={self.noise}] needs a method whose server uses only the sum of the client "
                             f"updates, but {method.aggregator.slot.name} needs each client's contribution ({reason}); use "
                             "dp[noise=local] (each client noises what it sends)")
        return self.noise

    def secure_aggregation(self) -> tuple[str, str]:
        return "sum", "privatises each client's release before any server step"

    def check(self, method: Any) -> None:
        self.noise_placement(method)
        if not self.passthrough and any(getattr(stage, "features", None) == "global" for stage in method.stages):
            raise ValueError("dp does not privatise the extra class-statistics pass of ccvr[features=global]; "
                             "use ccvr[features=local] with dp")

    def apply(self, previous: ServerState, new: ServerState, updates: Sequence[ClientUpdate],
              ctx: RoundContext) -> ServerState:
        return new


def privacy_model(ctx: RoundContext, local: bool) -> PrivacyModel:
    """The run's sampling model, from the round's context."""
    return PrivacyModel(ctx.num_clients, ctx.participation, ctx.client_sampling, local)


@functools.lru_cache(maxsize=64)
def _calibrated(epsilon: float, delta: float, rounds: int, model: PrivacyModel, tied: int,
                fixed: tuple[tuple[str, float], ...]) -> float:
    return calibrate_sigma(epsilon, delta, rounds, model, tied=tied, fixed=dict(fixed))


def privacy_model_for(spec: Any, local: bool) -> PrivacyModel:
    """The sampling model of a run (``RunSpec``): its clients and participation; the harness samples uniformly."""
    return PrivacyModel(spec.num_clients, spec.participation, "uniform", local)


def privacy_report(method: Any, num_clients: int, participation: float, rounds: int,
                   sampling: str = "uniform") -> list[dict[str, float]] | None:
    """The tidy ``privacy`` rows of each round 1..rounds of a method with a ``dp`` stage (None without one):
    epsilon at delta, the update's sigma (calibrated when ``epsilon`` was given), the joint multiplier."""
    for stage in method.stages:
        if isinstance(stage, DP):
            model = PrivacyModel(num_clients, participation, sampling, stage.noise_placement(method) == "local")
            return stage.report(model, rounds, method.requires)
    return None
