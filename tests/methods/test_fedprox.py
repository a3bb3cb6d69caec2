"""FedProx: FedAvg on the server, proximal term on the client."""

from __future__ import annotations

import math

import torch

from livar_bench.client.objectives import Proximal
from livar_bench.methods import ClientUpdate, FedProx, parse_method
from livar_bench.methods.base import CrossEntropy
from tests.methods._fakes import context, make_updates


def test_fedprox_server_is_the_sample_weighted_mean() -> None:
    # By hand: clients with n = 1 and 3 samples hold 2.0 and 6.0: (1 * 2 + 3 * 6) / 4 = 5.0, whatever mu.
    glob = {"w": torch.tensor([0.0])}
    updates = [ClientUpdate(0, 1, torch.zeros(1), {"w": torch.tensor([2.0])}),
               ClientUpdate(1, 3, torch.zeros(1), {"w": torch.tensor([6.0])})]
    for mu in (0.0, 0.5):
        assert float(parse_method(f"fedprox[mu={mu}]").aggregate(glob, updates, context())["w"]) == 5.0
    params, updates = make_updates()  # every tensor, also the LoRA factors and the head
    out = FedProx(mu=0.5)(params, updates, context())
    total = sum(u.num_samples for u in updates)
    for key in params:
        expected = sum(u.num_samples * u.params[key].double() for u in updates) / total
        torch.testing.assert_close(out[key].double(), expected, rtol=1e-6, atol=1e-6)


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
