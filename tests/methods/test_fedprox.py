"""FedProx: FedAvg on the server, proximal term on the client."""

from __future__ import annotations

import math

import torch

from livar_bench.client.objectives import Proximal
from livar_bench.methods import FedAvg, FedProx, parse_method
from livar_bench.methods.base import CrossEntropy
from tests.methods._fakes import context, make_updates


def test_fedprox_server_is_fedavg() -> None:
    params, updates = make_updates()
    for mu in (0.0, 0.5):
        out = FedProx(mu=mu)(params, updates, context())
        ref = FedAvg()(params, updates, context())
        assert all(torch.equal(out[k], ref[k]) for k in params)


def test_mu_zero_objective_is_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(8, 5, generator=g), torch.randint(0, 5, (8,), generator=g)
    params, anchor = {"w": torch.randn(3, generator=g)}, {"w": torch.randn(3, generator=g)}
    objective = parse_method("fedprox[mu=0]").objective
    assert objective == Proximal(0.0)
    assert torch.equal(objective(logits, targets, params, anchor), CrossEntropy()(logits, targets, params, anchor))


def test_proximal_term_by_hand() -> None:
    # zero logits over 2 classes: CE = ln 2; ||w - anchor||^2 = 1 + 4 = 5; mu = 0.2 -> + 0.5 * 0.2 * 5 = 0.5
    loss = parse_method("fedprox[mu=0.2]").objective(torch.zeros(1, 2), torch.tensor([0]), {"w": torch.tensor([1.0, 2.0])},
                                                    {"w": torch.zeros(2)})
    assert math.isclose(float(loss), math.log(2) + 0.5, rel_tol=1e-6)
    assert parse_method("fedprox").objective == Proximal(0.01)
