"""Server optimisers (Reddi et al., 2021): two rounds computed by hand from the paper's Algorithm 2."""

from __future__ import annotations

import math

import pytest
import torch

from livar_bench.errors import BenchError
from livar_bench.methods import ClientUpdate, parse_method
from tests.methods._fakes import context, make_updates

# One global scalar x0 = 1 and two clients with n = 1, 3 per round (FedAvg weights 1/4, 3/4).
X0 = 1.0
ROUNDS = [((3.0, 1), (-1.0, 3)),  # FedAvg 0.0  -> delta = 0 - x0
          ((2.0, 1), (0.5, 3))]  # FedAvg 0.875 -> delta = 0.875 - x1


def run_two_rounds(spec: str) -> list[float]:
    method = parse_method(spec)
    state = method.init_state({"w": torch.tensor([X0])})
    xs = []
    for r, clients in enumerate(ROUNDS, start=1):
        updates = [ClientUpdate(k, n, torch.zeros(1), {"w": torch.tensor([w])}) for k, (w, n) in enumerate(clients)]
        state = method.server_step(state, updates, context(round_=r))
        xs.append(float(state.params["w"]))
    return xs


def by_hand(second_moment, eta: float, beta1: float, tau: float) -> list[float]:
    x, m, v, xs = X0, 0.0, tau**2, []
    for clients in ROUNDS:
        fedavg = sum(w * n for w, n in clients) / sum(n for _, n in clients)
        delta = fedavg - x
        m = beta1 * m + (1 - beta1) * delta
        v = second_moment(v, delta * delta)
        x = x + eta * m / (math.sqrt(v) + tau)
        xs.append(x)
    return xs


def test_fedadam_by_hand() -> None:
    expected = by_hand(lambda v, d2: 0.99 * v + 0.01 * d2, eta=0.1, beta1=0.9, tau=0.1)
    # round 1: m = -0.1, v = 0.99 * 0.01 + 0.01 = 0.0199 -> x1 = 1 - 0.01 / (0.14107 + 0.1) = 0.958517
    assert expected[0] == pytest.approx(1 - 0.01 / (math.sqrt(0.0199) + 0.1))
    assert run_two_rounds("fedadam[eta=0.1,tau=0.1]") == pytest.approx(expected, rel=1e-6)


def test_fedyogi_by_hand() -> None:
    def yogi(v, d2):
        return v - 0.01 * d2 * math.copysign(1.0, v - d2) if v != d2 else v
    expected = by_hand(yogi, eta=0.1, beta1=0.9, tau=0.1)
    assert run_two_rounds("fedyogi[eta=0.1,tau=0.1]") == pytest.approx(expected, rel=1e-6)
    # Yogi differs from Adam here: v grows additively, not towards delta^2.
    assert expected != pytest.approx(by_hand(lambda v, d2: 0.99 * v + 0.01 * d2, 0.1, 0.9, 0.1))


def test_fedadagrad_by_hand() -> None:
    expected = by_hand(lambda v, d2: v + d2, eta=0.1, beta1=0.5, tau=0.1)
    assert run_two_rounds("fedadagrad[eta=0.1,beta1=0.5,tau=0.1]") == pytest.approx(expected, rel=1e-6)


def test_fedavgm_by_hand() -> None:
    # m1 = -1, x1 = 1 - 0.5 = 0.5; delta2 = 0.875 - 0.5 = 0.375, m2 = 0.9 * -1 + 0.375 = -0.525,
    # x2 = 0.5 + 0.5 * -0.525 = 0.2375
    assert run_two_rounds("fedavgm[eta=0.5,momentum=0.9]") == pytest.approx([0.5, 0.2375])


def test_fedavgm_without_momentum_at_unit_rate_is_fedavg() -> None:
    params, updates = make_updates()
    fedavg = parse_method("fedavg").aggregate(params, updates, context())
    plain = parse_method("fedavgm[eta=1,momentum=0]").aggregate(params, updates, context())
    for key in params:
        torch.testing.assert_close(plain[key], fedavg[key], rtol=1e-6, atol=1e-6)
    # to rounding, not bit for bit: x + 1 * (mean - x) is rounded twice in float32 (what the card says)
    assert any(not torch.equal(plain[key], fedavg[key]) for key in params)
    for key in params:  # within one float32 ulp of the mean's magnitude
        ulp = torch.finfo(torch.float32).eps * (fedavg[key].abs() + params[key].abs())
        assert ((plain[key] - fedavg[key]).abs() <= ulp).all()


def test_server_optimisers_compose_with_stages() -> None:
    params, updates = make_updates()
    method = parse_method("fedadam+ccvr")
    state = method.server_step(method.init_state(params), updates, context())
    alone = parse_method("fedadam").server_step(method.init_state(params), updates, context())
    assert set(state.buffers) == set(alone.buffers)  # the stage keeps the aggregator's buffers
    assert not torch.equal(state.params["head.weight"], alone.params["head.weight"])  # CCVR retrained the head
    assert torch.equal(state.params["blocks.0.attn.qkv.lora_A"], alone.params["blocks.0.attn.qkv.lora_A"])


@pytest.mark.parametrize(("spec", "message"), [
    ("fedadam[beta1=2]", "fedadam.beta1: cannot use '2': expected a number in \\[0, 1\\). beta1: decay of the first"),
    ("fedyogi[tau=0]", "fedyogi.tau: cannot use '0': expected a number in \\(0, inf\\). tau: adaptivity"),
    ("fedavgm[eta=-1]", "fedavgm.eta: cannot use '-1': expected a number in \\(0, inf\\). eta: server learning rate"),
    ("fedadagrad[lr=1]", "fedadagrad has no hyperparameter 'lr'; valid: eta, beta1, beta2, tau"),
])
def test_bad_hyperparameters(spec: str, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        parse_method(spec)
