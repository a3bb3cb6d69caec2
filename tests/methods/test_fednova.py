"""FedNova: with equal local steps it is FedAvg; with unequal steps one round (and two with server
momentum) computed by hand from the paper's rule, the normaliser accumulated step by step as the
authors' optimiser does (not from the closed form the method uses)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from livar_bench.errors import BenchError
from livar_bench.methods import ClientUpdate, parse_method
from tests.methods._fakes import context, make_updates


def test_equal_steps_is_fedavg():
    params, updates = make_updates()
    equal = [dataclasses.replace(u, num_steps=6) for u in updates]
    state = parse_method("fednova").init_state(params)
    nova = parse_method("fednova").server_step(state, equal, context()).params
    fedavg = parse_method("fedavg").server_step(state, equal, context()).params
    for key in params:
        torch.testing.assert_close(nova[key], fedavg[key], rtol=0, atol=1e-6)
    # ... and so is any momentum normaliser, since every a_i is the same
    momentum = parse_method("fednova[rho=0.9]").server_step(state, equal, context()).params
    torch.testing.assert_close(momentum["head.weight"], fedavg["head.weight"], rtol=0, atol=1e-6)


def test_unequal_steps_move_the_global_model_off_fedavg():
    params, updates = make_updates()  # the fakes take 3, 5 and 7 steps
    state = parse_method("fednova").init_state(params)
    nova = parse_method("fednova").server_step(state, updates, context()).params["head.bias"]
    fedavg = parse_method("fedavg").server_step(state, updates, context()).params["head.bias"]
    assert (nova - fedavg).abs().max() > 1e-3


def normaliser_by_steps(steps: int, rho: float) -> float:
    """The authors' local_normalizing_vec, one local step at a time (distoptim/FedNova.py, step())."""
    counter, vec = 0.0, 0.0
    for _ in range(steps):
        if rho != 0:
            counter = counter * rho + 1
            vec += counter
        else:
            vec += 1
    return vec


# global scalar 1.0; clients (value after local training, samples, local steps)
CLIENTS = [(0.2, 10, 2), (0.5, 30, 6), (1.6, 20, 3)]


def _updates(clients):
    return [ClientUpdate(k, n, torch.zeros(1), {"w": torch.tensor([w])}, num_steps=s)
            for k, (w, n, s) in enumerate(clients)]


@pytest.mark.parametrize("rho", [0.0, 0.9])
def test_one_round_by_the_papers_formula(rho):
    x = 1.0
    total = sum(n for _, n, _ in CLIENTS)
    p = [n / total for _, n, _ in CLIENTS]
    a = [normaliser_by_steps(s, rho) for _, _, s in CLIENTS]
    tau_eff = sum(pi * ai for pi, ai in zip(p, a, strict=True))
    expected = x - tau_eff * sum(pi * (x - w) / ai for pi, ai, (w, _, _) in zip(p, a, CLIENTS, strict=True))
    method = parse_method(f"fednova[rho={rho}]")
    out = method.server_step(method.init_state({"w": torch.tensor([x])}), _updates(CLIENTS), context())
    assert float(out.params["w"]) == pytest.approx(expected, rel=1e-6)
    assert not out.buffers  # no server momentum: no state


def test_server_momentum_over_two_rounds_by_hand():
    rounds = [CLIENTS, [(0.9, 10, 4), (1.1, 30, 4), (0.7, 20, 1)]]
    gmf, x, m = 0.5, 1.0, 0.0
    for clients in rounds:
        total = sum(n for _, n, _ in clients)
        p = [n / total for _, n, _ in clients]
        a = [float(s) for _, _, s in clients]
        tau_eff = sum(pi * ai for pi, ai in zip(p, a, strict=True))
        d = tau_eff * sum(pi * (x - w) / ai for pi, ai, (w, _, _) in zip(p, a, clients, strict=True))
        m = gmf * m + d
        x = x - m
    method = parse_method("fednova[gmf=0.5]")
    state = method.init_state({"w": torch.tensor([1.0])})
    for r, clients in enumerate(rounds, start=1):
        state = method.server_step(state, _updates(clients), context(round_=r))
    assert float(state.params["w"]) == pytest.approx(x, rel=1e-6)
    assert float(state.buffers["fednova.m.w"]) == pytest.approx(m, rel=1e-6)


def test_updates_without_local_steps_are_refused():
    params, updates = make_updates()
    state = parse_method("fednova").init_state(params)
    with pytest.raises(BenchError, match="local steps"):
        parse_method("fednova").server_step(state, [dataclasses.replace(updates[0], num_steps=None)], context())
