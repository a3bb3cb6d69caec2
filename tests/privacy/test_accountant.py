"""The accountant against a published configuration, a second independent accountant and exact formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from livar_bench.errors import BenchError
from livar_bench.privacy import PrivacyModel, calibrate_sigma, epsilon, epsilons, joint_multiplier
from livar_bench.privacy.accountant import ORDERS, round_rdp

# TensorFlow Privacy's MNIST DP-SGD tutorial (tutorials/README.md and mnist_dpsgd_tutorial.py): 60,000
# examples, batches of 256 drawn by Poisson sampling, noise multiplier 1.12, 60 epochs of 60000 // 256 steps,
# delta = 1e-5: "Privacy eps 2.92", from the RDP accountant over the orders below with the classic
# conversion eps = min_a RDP(a) + log(1/delta) / (a - 1).
TUTORIAL_Q = 256 / 60000
TUTORIAL_SIGMA = 1.12
TUTORIAL_STEPS = 60 * (60000 // 256)
TUTORIAL_ORDERS = [1 + x / 10 for x in range(1, 100)] + list(range(12, 64))
TUTORIAL_EPSILON = 2.92
DELTA = 1e-5


@pytest.fixture(scope="module")
def tutorial() -> PrivacyModel:
    return PrivacyModel(num_clients=60000, participation=TUTORIAL_Q, sampling="poisson")


def test_published_tutorial_epsilon_with_the_classic_conversion(tutorial: PrivacyModel) -> None:
    rdp = round_rdp(tutorial, TUTORIAL_SIGMA) * TUTORIAL_STEPS
    at = {a: r for a, r in zip(ORDERS, rdp, strict=True)}
    classic = min(at[a] + math.log(1 / DELTA) / (a - 1) for a in TUTORIAL_ORDERS)
    assert round(classic, 2) == TUTORIAL_EPSILON


def test_tutorial_epsilon_matches_opacus_rdp_and_is_above_prv(tutorial: PrivacyModel) -> None:
    """Opacus implements the sampled Gaussian's RDP independently (Mironov et al. 2019) and converts with the
    same bound (Balle et al. 2020); its PRV accountant (Gopi et al. 2021) composes numerically, tighter."""
    opacus = pytest.importorskip("opacus.accountants")
    ours = epsilon(tutorial, TUTORIAL_SIGMA, TUTORIAL_STEPS, DELTA)
    rdp = opacus.RDPAccountant()
    rdp.history = [(TUTORIAL_SIGMA, TUTORIAL_Q, TUTORIAL_STEPS)]
    theirs = rdp.get_epsilon(DELTA, alphas=list(ORDERS))
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert ours < TUTORIAL_EPSILON  # the better conversion, same RDP
    prv = opacus.PRVAccountant()
    prv.history = [(TUTORIAL_SIGMA, TUTORIAL_Q, TUTORIAL_STEPS)]
    tight = prv.get_epsilon(DELTA)
    assert 0.85 * ours < tight < ours


def exact_gaussian_epsilon(mu: float, delta: float) -> float:
    """Epsilon of a Gaussian mechanism with sensitivity / std = mu at ``delta``, exactly (Balle & Wang 2018):
    delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2), solved for eps by bisection."""
    def gap(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta
    low, high = 0.0, 1.0
    while gap(high) > 0:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if gap(mid) > 0 else (low, mid)
    return high


@pytest.mark.parametrize("sigma,rounds", [(1.0, 5), (2.0, 20), (0.7, 3)])
def test_full_participation_is_a_composed_gaussian(sigma: float, rounds: int) -> None:
    """T rounds of the Gaussian mechanism with multiplier z are one Gaussian with mu = sqrt(T) / z; RDP's
    epsilon is an upper bound on the exact one and close to it."""
    ours = epsilon(PrivacyModel(num_clients=10), sigma, rounds, DELTA)
    exact = exact_gaussian_epsilon(math.sqrt(rounds) / sigma, DELTA)
    assert exact <= ours <= 1.25 * exact


def test_epsilon_after_each_round_matches_composing_through_the_public_api() -> None:
    import dp_accounting as dp

    model = PrivacyModel(num_clients=10, participation=0.3, sampling="poisson")
    curve = epsilons(model, [1.5] * 4, DELTA)
    for t, value in enumerate(curve, start=1):
        accountant = dp.rdp.RdpAccountant(list(ORDERS))
        accountant.compose(dp.PoissonSampledDpEvent(0.3, dp.GaussianDpEvent(1.5)), t)
        assert value == pytest.approx(accountant.get_epsilon(DELTA), rel=1e-12)
    assert curve == sorted(curve) and curve[0] > 0


def test_sampling_amplifies_and_noise_lowers_epsilon() -> None:
    full = epsilon(PrivacyModel(20), 1.0, 5, DELTA)
    poisson = epsilon(PrivacyModel(20, 0.2, "poisson"), 1.0, 5, DELTA)
    assert poisson < full
    assert epsilon(PrivacyModel(20), 2.0, 5, DELTA) < full
    # uniform fixed-size sampling is accounted under replace-one (sensitivity 2C): no more private than
    # Poisson at the same rate
    uniform = epsilon(PrivacyModel(20, 0.2, "uniform"), 1.0, 5, DELTA)
    assert uniform > poisson
    # a local guarantee (no amplification, replace-one) is the full-participation Gaussian at z / 2
    assert epsilon(PrivacyModel(20, 0.2, local=True), 1.0, 5, DELTA) == pytest.approx(
        epsilon(PrivacyModel(20), 0.5, 5, DELTA))


def test_joint_multiplier_of_releases_made_together() -> None:
    assert joint_multiplier([1.0]) == 1.0
    assert joint_multiplier([2.0, 2.0]) == pytest.approx(math.sqrt(2))
    # Andrew et al. 2021: update z_delta with count std sigma_b (multiplier 2 sigma_b) is z = (z_d^-2 + (2 s_b)^-2)^-1/2
    assert joint_multiplier([1.2, 2 * 5.0]) == pytest.approx((1.2 ** -2 + 10.0 ** -2) ** -0.5)
    assert joint_multiplier([1.0, 0.0]) == 0.0  # a release without noise
    assert joint_multiplier([]) == math.inf
    assert epsilons(PrivacyModel(4), [1.0, 0.0, 1.0], DELTA)[1:] == [math.inf, math.inf]


@pytest.mark.parametrize("model", [PrivacyModel(10), pytest.param(PrivacyModel(50, 0.1, "poisson"), marks=pytest.mark.slow)],
                         ids=["full", "poisson"])
def test_calibrated_sigma_meets_the_target_and_no_less_noise_would(model: PrivacyModel) -> None:
    sigma = calibrate_sigma(4.0, DELTA, 10, model)
    assert epsilon(model, sigma, 10, DELTA) <= 4.0
    assert epsilon(model, sigma * 0.999, 10, DELTA) > 4.0


def test_calibration_with_tied_and_fixed_releases() -> None:
    model = PrivacyModel(10)
    sigma = calibrate_sigma(6.0, DELTA, 5, model, tied=2, fixed={"clip count": 10.0})
    joint = (2 / sigma**2 + 1 / 10.0**2) ** -0.5
    assert epsilon(model, joint, 5, DELTA) == pytest.approx(6.0, rel=1e-3)
    assert epsilon(model, joint, 5, DELTA) <= 6.0


def test_unreachable_target_names_what_spends_it() -> None:
    with pytest.raises(BenchError, match="cannot be reached: class statistics .* alone spend epsilon"):
        calibrate_sigma(1.0, DELTA, 5, PrivacyModel(10), fixed={"class statistics": 2.0})
    with pytest.raises(BenchError, match="noise multiplier above"):
        calibrate_sigma(1e-6, DELTA, 5, PrivacyModel(10))


@pytest.mark.parametrize("delta", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_delta_outside_zero_one(delta: float) -> None:
    with pytest.raises(BenchError, match=r"delta must be in \(0, 1\)"):
        epsilon(PrivacyModel(10), 1.0, 3, delta)
    with pytest.raises(BenchError, match=r"delta must be in \(0, 1\)"):
        calibrate_sigma(3.0, delta, 3, PrivacyModel(10))


@pytest.mark.parametrize("sigma", [-1.0, float("nan"), float("-inf")])
def test_negative_or_nan_sigma(sigma: float) -> None:
    with pytest.raises(BenchError, match="noise multiplier >= 0"):
        epsilon(PrivacyModel(10), sigma, 3, DELTA)


@pytest.mark.parametrize("target", [0.0, -1.0, float("inf"), float("nan")])
def test_target_epsilon_must_be_positive_and_finite(target: float) -> None:
    with pytest.raises(BenchError, match="target epsilon must be a finite number > 0"):
        calibrate_sigma(target, DELTA, 3, PrivacyModel(10))


def test_bad_privacy_models() -> None:
    with pytest.raises(BenchError, match="participation"):
        PrivacyModel(10, 0.0)
    with pytest.raises(BenchError, match="client sampling"):
        PrivacyModel(10, 0.5, "bernoulli")
    with pytest.raises(BenchError, match="num_clients"):
        PrivacyModel(0)
    assert PrivacyModel(10, 1.0, "poisson").scheme == "full"
    assert PrivacyModel(10, 0.95, "uniform").scheme == "full"  # ceil(0.95 * 10) = 10: every client
    assert np.isfinite(epsilon(PrivacyModel(10, 0.5), 1.0, 2, DELTA))

