"""Noise calibration: the smallest noise multiplier of the model update that meets a target epsilon.

The update's multiplier sigma is searched (``dp_accounting.calibrate_dp_mechanism``, Brent's method with a
guarantee that the returned value meets the target) while the run's other releases keep theirs:

    z(sigma) = (tied / sigma^2 + sum_j fixed_j^-2)^-1/2

``tied`` counts releases whose multiplier is sigma itself (the update, and signals set to "same as
sigma"); ``fixed`` are releases with their own multiplier (a signal's, adaptive clipping's count). As
sigma grows, epsilon falls to what the fixed releases alone spend; when that already exceeds the target,
no sigma reaches it and the error names them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from livar_bench.errors import BenchError
from livar_bench.privacy.accountant import (
    SIGMA_MAX,
    PrivacyModel,
    _dp,
    check_delta,
    check_multiplier,
    epsilon,
    quiet,
)

SIGMA_MIN = 1e-3  # the smallest multiplier calibration returns (a target met with less is met with this)


def joint_with(sigma: float, tied: int, fixed: Mapping[str, float]) -> float:
    """z(sigma) above: the joint multiplier when ``tied`` releases use ``sigma`` and the rest ``fixed``."""
    precision = tied / (sigma * sigma) if sigma > 0 else math.inf
    precision += sum(1.0 / (z * z) for z in fixed.values() if z > 0 and math.isfinite(z))
    if any(z == 0 for z in fixed.values()):
        return 0.0
    return math.inf if precision == 0 else 1.0 / math.sqrt(precision)


def calibrate_sigma(target_epsilon: float, delta: float, rounds: int, model: PrivacyModel, *, tied: int = 1,
                    fixed: Mapping[str, float] | None = None) -> float:
    """The update's noise multiplier for ``target_epsilon`` at ``delta`` after ``rounds`` rounds.

    Args:
        target_epsilon: epsilon to reach (finite, > 0).
        delta: in (0, 1).
        rounds: rounds the run releases in (>= 1).
        model: sampling and noise placement (``PrivacyModel``).
        tied: releases using the calibrated multiplier (>= 1).
        fixed: name -> multiplier of releases with their own noise (for the error message).

    Returns:
        sigma in [SIGMA_MIN, SIGMA_MAX] whose epsilon is at most the target (within 1e-6 in sigma).

    Raises:
        BenchError: a bad input, or a target no sigma up to SIGMA_MAX reaches.
    """
    fixed = {name: check_multiplier(name, z) for name, z in (fixed or {}).items()}
    delta = check_delta(delta)
    if isinstance(target_epsilon, bool) or not isinstance(target_epsilon, (int, float)) or \
            not math.isfinite(target_epsilon) or target_epsilon <= 0:
        raise BenchError(f"target epsilon must be a finite number > 0, got {target_epsilon!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise BenchError(f"rounds must be a positive integer, got {rounds!r}")
    if tied < 1:
        raise ValueError("at least one release must use the calibrated multiplier")

    def eps(sigma: float) -> float:
        return epsilon(model, joint_with(sigma, tied, fixed), rounds, delta)

    floor = epsilon(model, joint_with(math.inf, tied, fixed), rounds, delta) if fixed else 0.0
    if floor > target_epsilon:
        spent = ", ".join(f"{name} (noise multiplier {z:g})" for name, z in sorted(fixed.items()))
        raise BenchError(f"target epsilon {target_epsilon:g} at delta {delta:g} cannot be reached: {spent} alone "
                         f"spend epsilon {floor:.4g} over {rounds} rounds; give them more noise or raise the target")
    if eps(SIGMA_MAX) > target_epsilon:
        raise BenchError(f"target epsilon {target_epsilon:g} at delta {delta:g} over {rounds} rounds would need a "
                         f"noise multiplier above {SIGMA_MAX:g}; raise the target, sample fewer clients per round "
                         "or run fewer rounds")
    if eps(SIGMA_MIN) <= target_epsilon:
        return SIGMA_MIN
    # A bracket a factor 2 wide around the answer first (each evaluation of sampling without replacement
    # costs about half a second), then Brent's method inside it.
    low, high = 1.0, 2.0
    if eps(low) <= target_epsilon:
        while eps(low / 2) <= target_epsilon:
            low /= 2
        low, high = low / 2, low
    else:
        while eps(high) > target_epsilon:
            low, high = high, high * 2
    dp = _dp()

    def event(sigma: float):
        return dp.SelfComposedDpEvent(model.round_event(joint_with(sigma, tied, fixed)), rounds)

    with quiet():
        return float(dp.calibrate_dp_mechanism(model.accountant, event, target_epsilon, delta,
                                               dp.ExplicitBracketInterval(max(low, SIGMA_MIN), min(high, SIGMA_MAX)),
                                               tol=1e-5 * low))
