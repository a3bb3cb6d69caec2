"""The aggregator contract, checked over every registered method (stages as fedavg+stage)."""

from __future__ import annotations

import pytest
import torch

from livar_bench.methods import entries, parse_method
from livar_bench.methods.base import Signal
from tests.methods._fakes import context, make_updates, snapshot

NAMES = [e.name for e in entries()]

# Identical clients whose tensors differ from the global ones: which specs return the clients' tensors.
# TIES and task arithmetic at their defaults (lam 0.4, TIES density 0.3) are *not* fixed points: they
# move only part of the way towards the clients (and TIES drops 70 % of each update). CCVR retrains
# the head, so no spec with a stage is one.
FIXED_POINTS = ["fedavg", "fedprox", "livar", "livar[head_subset=all,head_count_weighting=true]",
                "task_arithmetic[lam=1]", "ties[density=1,lam=1]"]


def test_registry_has_the_required_methods() -> None:
    kinds = {e.name: e.kind for e in entries()}
    assert kinds == {"fedavg": "method", "fedprox": "method", "livar": "method", "ties": "method",
                     "task_arithmetic": "method", "ccvr": "stage"}
    for e in entries():
        assert e.paper.startswith("https://arxiv.org/abs/")
        assert isinstance(e.requires, frozenset)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_output_matches_input_layout(name: str, dtype: torch.dtype) -> None:
    method = parse_method(name)
    params, updates = make_updates(dtype=dtype)
    out = method.server_step(params, updates, context())
    assert list(out) == list(params)
    for key, value in params.items():
        assert out[key].shape == value.shape, key
        assert out[key].dtype == value.dtype, key
        assert bool(torch.isfinite(out[key].float()).all()), key


@pytest.mark.parametrize("name", NAMES)
def test_inputs_not_mutated(name: str) -> None:
    method = parse_method(name)
    params, updates = make_updates()
    before = snapshot(params, updates)
    method.server_step(params, updates, context())
    after = snapshot(params, updates)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_client_order_does_not_matter(name: str) -> None:
    method = parse_method(name)
    params, updates = make_updates()
    forward = method.server_step(params, updates, context(seed=3))
    backward = method.server_step(params, updates[::-1], context(seed=3))
    assert all(torch.equal(forward[k], backward[k]) for k in params)
    # The aggregator alone (no sorting by Method.server_step) agrees up to float summation order.
    direct = method.aggregator(params, updates[::-1], context(seed=3))
    expected = method.aggregator(params, updates, context(seed=3))
    for k in params:
        torch.testing.assert_close(direct[k], expected[k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_a_fixed_generator(name: str) -> None:
    method = parse_method(name)
    params, updates = make_updates()
    first = method.server_step(params, updates, context(seed=7))
    second = method.server_step(params, updates, context(seed=7))
    assert all(torch.equal(first[k], second[k]) for k in params)


@pytest.mark.parametrize("spec", FIXED_POINTS)
def test_identical_clients_are_a_fixed_point(spec: str) -> None:
    method = parse_method(spec)
    params, updates = make_updates(identical=True)
    out = method.server_step(params, updates, context())
    for key in params:
        torch.testing.assert_close(out[key], updates[0].params[key], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spec", ["ties", "task_arithmetic", "ccvr"])
def test_defaults_that_are_not_fixed_points(spec: str) -> None:
    params, updates = make_updates(identical=True)
    out = parse_method(spec).server_step(params, updates, context())
    assert any(not torch.allclose(out[k], updates[0].params[k]) for k in params)


@pytest.mark.parametrize("name", NAMES)
def test_requires_only_known_signals(name: str) -> None:
    method = parse_method(name)
    assert method.requires <= set(Signal)
