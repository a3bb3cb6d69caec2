"""The privacy accountant: epsilon at a given delta after each round, from Google's ``dp-accounting``.

Privacy unit: one client (client-level DP). Each round releases, for the round's sampled clients, a set
of Gaussian mechanisms at once (the clipped model update and, where a method uses them, its clipped
signals, each with its own noise multiplier z_i = noise std / that release's sensitivity). Released
together on the same sample, they are one Gaussian mechanism on the concatenated, rescaled vector, with

    z = (sum_i z_i^-2)^-1/2                                   (``joint_multiplier``)

(Andrew et al. 2021, arXiv 1905.03871, Thm. 1, for the update and the clipped-count of adaptive
clipping; the same argument holds for any number of parts). The round's event, by client sampling:

- ``full`` (every client every round): ``GaussianDpEvent(z)``, add-or-remove-one-client adjacency;
- ``poisson`` (each client independently with probability q = ``--participation``):
  ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``, add-or-remove-one-client;
- ``uniform`` (a fixed-size subset of m = ceil(q K) of the K clients, what ``--participation`` draws):
  ``SampledWithoutReplacementDpEvent(K, m, GaussianDpEvent(z / 2))`` under replace-one-client adjacency
  (the only relation ``dp-accounting`` analyses sampling without replacement in, Wang et al. 2019,
  arXiv 1808.00087): replacing a client moves a clipped contribution by up to twice its bound, so the
  multiplier relative to that sensitivity is z / 2.
- ``local`` noise (each client noises what it sends itself): the guarantee each client holds against the
  server, which knows who was sampled, so no amplification by sampling: ``GaussianDpEvent(z / 2)``,
  replace-one (any two data sets of that client).

Rounds compose by RDP (``RdpAccountant``, the accountant Flower's own DP strategies wrap); epsilon uses its
conversion from RDP (Balle et al. 2020). Why this library and not Opacus's: see ``docs/privacy.md``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from livar_bench.errors import BenchError

Sampling = Literal["poisson", "uniform"]
SAMPLINGS: tuple[str, ...] = ("uniform", "poisson")
# RDP orders: dp-accounting's default set (1.1 .. 10.9 by 0.1, 11 .. 63, 128, 256, 512, 1024).
ORDERS: tuple[float, ...] = tuple([1 + x / 10 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024])
SIGMA_MAX = 1e4  # calibration searches noise multipliers up to this


def _dp() -> Any:
    try:
        import dp_accounting
    except ImportError:
        raise BenchError("differential privacy needs Google's dp-accounting library: "
                         "pip install 'livar-bench[privacy]' (or pip install dp-accounting)") from None
    return dp_accounting


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """dp-accounting logs (through absl) every RDP order it cannot evaluate and then leaves out; the
    epsilon is still a valid bound over the remaining orders, so those lines are noise here."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_delta(delta: float) -> float:
    """``delta`` as a float, or a ``BenchError`` when it is not in (0, 1)."""
    if not isinstance(delta, (int, float)) or isinstance(delta, bool) or not (0 < delta < 1):
        raise BenchError(f"delta must be in (0, 1), got {delta!r}; a common choice is 1/num_clients or 1e-5")
    return float(delta)


def check_multiplier(name: str, value: float) -> float:
    """A noise multiplier: finite and >= 0 (0 = no noise, no privacy)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise BenchError(f"{name} must be a noise multiplier >= 0 (noise std / sensitivity), got {value!r}")
    return float(value)


def joint_multiplier(multipliers: Sequence[float]) -> float:
    """The noise multiplier of several Gaussian releases made together: (sum_i z_i^-2)^-1/2.

    A release with z = 0 (no noise) makes the whole round non-private (0); an empty list is no release (inf).
    """
    values = [check_multiplier("noise multiplier", z) for z in multipliers]
    if any(z == 0 for z in values):
        return 0.0
    precision = sum(1.0 / (z * z) for z in values if math.isfinite(z))
    return math.inf if precision == 0 else 1.0 / math.sqrt(precision)


@dataclass(frozen=True)
class PrivacyModel:
    """How a run's rounds are sampled and noised, which fixes the event of one round.

    Attributes:
        num_clients: K, clients in the federation.
        participation: q, the fraction sampled per round (``--participation``).
        sampling: "uniform" (a fixed-size subset of m = ceil(q K), what the harness draws) or "poisson";
            every client every round is accounted as "full" whatever is given.
        local: each client adds the noise to what it sends (no amplification by sampling, see above).
    """

    num_clients: int
    participation: float = 1.0
    sampling: Sampling = "uniform"
    local: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.num_clients, bool) or not isinstance(self.num_clients, int) or self.num_clients < 1:
            raise BenchError(f"num_clients must be a positive integer, got {self.num_clients!r}")
        if not (isinstance(self.participation, (int, float)) and 0 < self.participation <= 1):
            raise BenchError(f"participation must be in (0, 1], got {self.participation!r}")
        if self.sampling not in SAMPLINGS:
            raise BenchError(f"client sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")

    @property
    def sampled(self) -> int:
        """m, clients per round (fixed for uniform sampling, the expected number for Poisson)."""
        return max(1, math.ceil(self.participation * self.num_clients))

    @property
    def scheme(self) -> str:
        """"full", "poisson" or "uniform" as it is accounted (any sampling of every client is full)."""
        if self.sampling == "poisson":
            return "full" if self.participation >= 1 else "poisson"
        return "full" if self.sampled >= self.num_clients else "uniform"

    @property
    def neighbouring(self) -> str:
        """The adjacency the epsilon holds for."""
        return "replace-one-client" if self.local or self.scheme == "uniform" else "add-or-remove-one-client"

    def round_event(self, multiplier: float) -> Any:
        """The ``dp_accounting`` event of one round whose releases have joint multiplier ``multiplier`` (> 0)."""
        dp = _dp()
        if self.local:
            return dp.GaussianDpEvent(multiplier / 2)
        if self.scheme == "full":
            return dp.GaussianDpEvent(multiplier)
        if self.scheme == "poisson":
            return dp.PoissonSampledDpEvent(self.participation, dp.GaussianDpEvent(multiplier))
        return dp.SampledWithoutReplacementDpEvent(self.num_clients, self.sampled, dp.GaussianDpEvent(multiplier / 2))

    def accountant(self) -> Any:
        dp = _dp()
        relation = dp.NeighboringRelation.REPLACE_ONE if self.neighbouring.startswith("replace") else \
            dp.NeighboringRelation.ADD_OR_REMOVE_ONE
        return dp.rdp.RdpAccountant(ORDERS, relation)


def round_rdp(model: PrivacyModel, multiplier: float) -> Any:
    """RDP (at ``ORDERS``) of one round of joint multiplier ``multiplier`` (> 0, finite); cached, since
    sampling without replacement costs about a second per event and every round of a run repeats it."""
    return _round_rdp(model, float(multiplier)).copy()


@functools.lru_cache(maxsize=256)
def _round_rdp(model: PrivacyModel, multiplier: float) -> Any:
    accountant = model.accountant()
    with quiet():
        accountant.compose(model.round_event(multiplier))
    # dp-accounting keeps the composed RDP curve in ``_rdp`` (no public getter; tested in
    # tests/privacy/test_accountant.py against composing the rounds through the public API).
    return accountant._rdp


def epsilons(model: PrivacyModel, multipliers: Sequence[float], delta: float) -> list[float]:
    """Epsilon at ``delta`` after each round, round t having joint noise multiplier ``multipliers[t-1]``.

    A round with multiplier 0 (a release without noise) makes every later epsilon infinite; one with
    multiplier inf (nothing released) costs nothing. RDP adds up over rounds; each epsilon is
    dp-accounting's conversion of the sum (``compute_epsilon``).
    """
    delta = check_delta(delta)
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

    out, spent, total = [], False, None
    for z in multipliers:
        z = check_multiplier("noise multiplier", z)
        if z == 0:
            spent = True
        elif math.isfinite(z):
            step = round_rdp(model, z)
            total = step if total is None else total + step
        if spent:
            out.append(math.inf)
        elif total is None:
            out.append(0.0)
        else:
            with quiet():
                out.append(float(compute_epsilon(ORDERS, total, delta)[0]))
    return out


def epsilon(model: PrivacyModel, multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon at ``delta`` after ``rounds`` rounds of joint multiplier ``multiplier`` (one conversion)."""
    delta = check_delta(delta)
    z = check_multiplier("noise multiplier", multiplier)
    if z == 0:
        return math.inf
    if not math.isfinite(z) or rounds == 0:
        return 0.0
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

    with quiet():
        return float(compute_epsilon(ORDERS, round_rdp(model, z) * int(rounds), delta)[0])
