"""What each release reveals about one client, its clipping and its sensitivity, and its private form.

Every quantity a client sends is clipped to a bound B (so that one client moves it by at most B in L2,
add-or-remove-one-client adjacency; 2B under replace-one) and gets Gaussian noise of std z * B, z its noise
multiplier. The accountant composes the parts of one round as one Gaussian (``accountant.joint_multiplier``).

The model update (every method): u_k = theta_k - theta_global over the released keys (LoRA factors and
head; a key the method freezes is not released), clipped to C: sensitivity C (``clipping.clip_params``).

Class statistics (``Signal.CLASS_STATS``/``CLASS_COV``; LIVAR's head weights, CCVR's Gaussians). A client
sends, per class c, counts n_c and n_c^correct, means mu_c, per-dimension variances var_c and
var_c^correct (and covariances Sigma_c with CLASS_COV). Each is one part, clipped as a whole:

- ``counts``: the [2C] vector (n_c, n_c^correct); ||.||_2 <= sum_c 2 n_c = 2 n_k, clipped to
  ``count_clip``: sensitivity ``count_clip``;
- ``means``, ``variances``, ``variances_correct`` ([C, D] each) and ``covariances`` ([C, D, D]): no
  bound holds for features of unbounded norm, so each part is scaled to a Frobenius norm of at most
  ``stats_clip``: sensitivity ``stats_clip`` each (for features of norm <= R, ||mu||_F <= sqrt(C) R and
  var, Sigma have ||.||_F <= sqrt(C) R^2, so a bound above those clips nothing).

The methods that read them need each client's own statistics (per-client head weights, per-client
Gaussians), so the noise is the client's own (local): each client's parts are private on their own, and
what the server computes from them is post-processing. Post-processing here: counts rounded and
clamped to [0, inf) (n^correct <= n), variances clamped to >= 0, covariances symmetrised.

LIVAR's training signals (``Signal.LORA_SIGNAL``): the [F] vector of per-factor path-integral sums
S_f = sum_steps |sum(grad * delta theta)| (F = 2 x LoRA modules), non-negative, scaled to an L2 norm of at
most ``signal_clip``: sensitivity ``signal_clip``; local noise (LIVAR's quantile buckets need each client's
values), clamped to >= 0 after the noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from livar_bench.privacy.clipping import check_bound, clip_vector
from livar_bench.types import ClassStats

CLASS_STATS_PARTS = ("counts", "means", "variances", "variances_correct")
COV_PART = "covariances"


@dataclass(frozen=True)
class Release:
    """One quantity released per round: its name, clipping bound (= sensitivity) and noise multiplier."""

    name: str
    sensitivity: float
    multiplier: float

    @property
    def noise_std(self) -> float:
        return self.sensitivity * self.multiplier


def class_stats_parts(with_cov: bool) -> tuple[str, ...]:
    """The parts of the class statistics a client sends (each one release)."""
    return CLASS_STATS_PARTS + ((COV_PART,) if with_cov else ())


def _noisy(values: Tensor, bound: float, multiplier: float, generator: torch.Generator) -> Tensor:
    """clip(values) + N(0, (multiplier * bound)^2), float64, on ``values``' device."""
    clipped = clip_vector(values, bound)
    if multiplier == 0:
        return clipped
    z = torch.randn(values.shape, generator=generator, device=generator.device, dtype=torch.float64)
    return clipped + (multiplier * bound) * z.to(values.device)


def privatise_class_stats(stats: ClassStats, *, count_clip: float, stats_clip: float, multiplier: float,
                          generator: torch.Generator) -> ClassStats:
    """One client's class statistics, each part clipped and noised (local noise), then post-processed.

    Args:
        stats: what the client computed.
        count_clip: bound of the counts part.
        stats_clip: bound of each feature-statistics part.
        multiplier: noise multiplier of every part.
        generator: this client's noise stream; parts are drawn in the order of ``class_stats_parts``.
    """
    check_bound("count_clip", count_clip)
    check_bound("stats_clip", stats_clip)
    c = stats.count.shape[0]
    counts = _noisy(torch.cat([stats.count.double(), stats.count_correct.double()]), count_clip, multiplier, generator)
    count = counts[:c].round().clamp(min=0)
    count_correct = torch.minimum(counts[c:].round().clamp(min=0), count)
    dtype = stats.mean.dtype
    mean = _noisy(stats.mean, stats_clip, multiplier, generator).to(dtype)
    var = _noisy(stats.var, stats_clip, multiplier, generator).clamp(min=0).to(stats.var.dtype)
    var_correct = _noisy(stats.var_correct, stats_clip, multiplier, generator).clamp(min=0).to(stats.var_correct.dtype)
    cov = None
    if stats.cov is not None:
        noisy = _noisy(stats.cov, stats_clip, multiplier, generator)
        cov = (0.5 * (noisy + noisy.transpose(-1, -2))).to(stats.cov.dtype)
    return ClassStats(count=count.long(), mean=mean, var=var, count_correct=count_correct.long(),
                      var_correct=var_correct, cov=cov)


def privatise_lora_signal(signals: Mapping[str, Tensor], *, signal_clip: float, multiplier: float,
                          generator: torch.Generator) -> dict[str, Tensor]:
    """One client's LIVAR signals (factor key -> 0-dim tensor), clipped as one vector, noised, clamped >= 0."""
    check_bound("signal_clip", signal_clip)
    keys = list(signals)
    vector = torch.stack([signals[k].double() for k in keys])  # [F]
    noisy = _noisy(vector, signal_clip, multiplier, generator).clamp(min=0)
    return {k: noisy[i].to(signals[k].dtype) for i, k in enumerate(keys)}
