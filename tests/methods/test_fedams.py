"""FedAMS and its preset FedAMSGrad: three rounds computed by hand from the update rule."""

from __future__ import annotations

import math

import pytest
import torch

from livar_bench.errors import BenchError
from livar_bench.methods import ClientUpdate, parse_method
from tests.methods._fakes import context

# One global scalar x0 = 1; two clients with n = 1, 3 per round (FedAvg weights 1/4, 3/4). Round 1 moves
# far (FedAvg 0), rounds 2 and 3 stay near x1 (FedAvg 0.9125, 0.875), so v falls below its running
# maximum and the max matters.
X0 = 1.0
ROUNDS = [((3.0, 1), (-1.0, 3)), ((0.95, 1), (0.9, 3)), ((0.8, 1), (0.9, 3))]


def run(spec: str) -> tuple[list[float], dict[str, float]]:
    method = parse_method(spec)
    state = method.init_state({"w": torch.tensor([X0])})
    xs = []
    for r, clients in enumerate(ROUNDS, start=1):
        updates = [ClientUpdate(k, n, torch.zeros(1), {"w": torch.tensor([w])}) for k, (w, n) in enumerate(clients)]
        state = method.server_step(state, updates, context(round_=r))
        xs.append(float(state.params["w"]))
    return xs, {k: float(v) for k, v in state.buffers.items()}


def by_hand(eta, beta1, beta2, vhat0, eps, corrected):
    x, m, v, vhat, xs = X0, 0.0, 0.0, vhat0, []
    for t, clients in enumerate(ROUNDS, start=1):
        delta = sum(w * n for w, n in clients) / sum(n for _, n in clients) - x
        m = beta1 * m + (1 - beta1) * delta
        v = beta2 * v + (1 - beta2) * delta**2
        vhat = max(vhat, v)
        c1, c2 = (1 - beta1**t, 1 - beta2**t) if corrected else (1, 1)
        x = x + eta / c1 * m / (math.sqrt(vhat) / math.sqrt(c2) + eps)
        xs.append(x)
    return xs, {"m": m, "v": v, "vhat": vhat}


def test_fedams_by_hand() -> None:
    expected, buffers = by_hand(eta=0.1, beta1=0.9, beta2=0.99, vhat0=1e-3, eps=0.0, corrected=True)
    # round 1: delta = 0 - 1 = -1, m = -0.1, v = 0.01, vhat = 0.01; c1 = 0.1, c2 = 0.01:
    # x1 = 1 + 0.1 / 0.1 * -0.1 / (0.1 / 0.1) = 0.9
    assert expected[0] == pytest.approx(0.9)
    xs, state = run("fedams[eta=0.1]")
    assert xs == pytest.approx(expected, rel=1e-6)
    assert state == pytest.approx({f"fedams.{k}.w": v for k, v in buffers.items()}, rel=1e-6)
    assert buffers["vhat"] == pytest.approx(0.01) and buffers["v"] < 0.01  # the max kept round 1's v


def test_fedams_without_bias_correction_by_hand() -> None:
    expected, _ = by_hand(eta=0.1, beta1=0.5, beta2=0.9, vhat0=0.05, eps=0.0, corrected=False)
    xs, _ = run("fedams[eta=0.1,beta1=0.5,beta2=0.9,vhat_init=0.05,bias_correction=false]")
    assert xs == pytest.approx(expected, rel=1e-6)


def test_fedamsgrad_is_the_preset_with_eps_in_the_denominator() -> None:
    expected, buffers = by_hand(eta=0.1, beta1=0.9, beta2=0.99, vhat0=0.0, eps=1e-3, corrected=True)
    xs, state = run("fedamsgrad[eta=0.1]")
    assert xs == pytest.approx(expected, rel=1e-6)
    assert state == pytest.approx({f"fedamsgrad.{k}.w": v for k, v in buffers.items()}, rel=1e-6)
    assert run("fedams[eta=0.1,vhat_init=0,eps=0.001]")[0] == xs  # same numbers under the other name


def test_both_stabilisers_off_is_refused() -> None:
    with pytest.raises(BenchError, match="fedams: vhat_init and eps are both 0"):
        parse_method("fedams[vhat_init=0]")
    with pytest.raises(BenchError, match="fedamsgrad: vhat_init and eps are both 0"):
        parse_method("fedamsgrad[eps=0]")
