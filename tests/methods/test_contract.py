"""The method contract, checked over every registered method (stages as fedavg+stage)."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch

from livar_bench.methods import MethodSpec, ServerState, Signal, entries, get_entry, parse_method
from livar_bench.methods.client_side import kind_of
from livar_bench.types import needs_class_stats
from tests.methods._fakes import context, make_updates, snapshot

NAMES = [e.name for e in entries()]
REQUIRED = {"fedavg": "method", "fedprox": "method", "livar": "method", "ties": "method",
            "task_arithmetic": "method", "ccvr": "stage"}

# Identical clients whose tensors differ from the global ones: which specs return the clients' tensors.
# TIES and task arithmetic at their defaults (lam 0.4, TIES density 0.3) are *not* fixed points: they
# move only part of the way towards the clients (and TIES drops 70 % of each update). CCVR retrains
# the head, so no spec with a stage is one.
FIXED_POINTS = ["fedavg", "fedprox", "livar", "livar[head_subset=all,head_count_weighting=true]",
                "task_arithmetic[lam=1]", "ties[density=1,lam=1]"]


def step(method, state, updates, round_=1, seed=0):
    return method.server_step(state, updates, context(seed=seed, round_=round_))


def test_registry_has_the_required_methods() -> None:
    kinds = {e.name: e.kind for e in entries()}
    assert {name: kinds.get(name) for name in REQUIRED} == REQUIRED
    for e in entries():
        assert e.paper.startswith("https://arxiv.org/abs/") or e.paper == "-", e.name
        assert isinstance(e.requires, frozenset) and e.label and isinstance(e.order, int)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_output_matches_input_layout(name: str, dtype: torch.dtype) -> None:
    method = parse_method(name)
    params, updates = make_updates(dtype=dtype)
    out = step(method, method.init_state(params), updates)
    assert isinstance(out, ServerState)
    assert list(out.params) == list(params)
    for key, value in params.items():
        assert out.params[key].shape == value.shape, key
        assert out.params[key].dtype == value.dtype, key
        assert bool(torch.isfinite(out.params[key].float()).all()), key
    namespaces = [c.namespace for c in MethodSpec.parse(name).components]
    for key, value in out.buffers.items():
        assert key.split(".", 1)[0] in namespaces, f"buffer {key} is not under its component's namespace"
        assert isinstance(value, torch.Tensor)


@pytest.mark.parametrize("name", NAMES)
def test_inputs_not_mutated(name: str) -> None:
    method = parse_method(name)
    params, updates = make_updates()
    state = step(method, method.init_state(params), updates)  # a state with buffers, where the method has any
    before = snapshot(params, updates) + [v.clone() for v in state.buffers.values()]
    step(method, state, updates, round_=2)
    after = snapshot(params, updates) + list(state.buffers.values())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_client_order_does_not_matter(name: str) -> None:
    method = parse_method(name)
    params, updates = make_updates()
    forward = step(method, method.init_state(params), updates, seed=3)
    backward = step(method, method.init_state(params), updates[::-1], seed=3)
    assert all(torch.equal(forward.params[k], backward.params[k]) for k in params)
    # The aggregator alone (no sorting by Method.server_step) agrees up to float summation order.
    direct = method.aggregator.server_step(method.init_state(params), updates[::-1], context(seed=3))
    expected = method.aggregator.server_step(method.init_state(params), updates, context(seed=3))
    for k in params:
        torch.testing.assert_close(direct.params[k], expected.params[k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_a_fixed_generator(name: str) -> None:
    method = parse_method(name)
    params, updates = make_updates()
    first = step(method, method.init_state(params), updates, seed=7)
    second = step(method, method.init_state(params), updates, seed=7)
    assert all(torch.equal(first.params[k], second.params[k]) for k in params)


@pytest.mark.parametrize("name", NAMES)
def test_resume_from_a_saved_state_is_exact(name: str) -> None:
    """Three rounds straight through equal one round, a torch.save/load of the state, then two more."""
    method = parse_method(name)
    params, updates = make_updates()
    _, round2 = make_updates(seed=1)
    _, round3 = make_updates(seed=2)
    straight = method.init_state(params)
    for r, ups in enumerate((updates, round2, round3), start=1):
        straight = step(method, straight, ups, round_=r)
    resumed = step(method, method.init_state(params), updates, round_=1)
    buffer = io.BytesIO()
    torch.save(resumed.to_dict(), buffer)
    buffer.seek(0)
    resumed = ServerState.from_dict(torch.load(buffer, weights_only=False))
    rebuilt = parse_method(name)  # a fresh process builds the method anew: nothing may live on the instance
    for r, ups in ((2, round2), (3, round3)):
        resumed = step(rebuilt, resumed, ups, round_=r)
    for part in ("params", "buffers", "base_deltas"):
        a, b = getattr(straight, part), getattr(resumed, part)
        assert list(a) == list(b), part
        assert all(torch.equal(a[k], b[k]) for k in a), part


@pytest.mark.parametrize("spec", FIXED_POINTS)
def test_identical_clients_are_a_fixed_point(spec: str) -> None:
    method = parse_method(spec)
    params, updates = make_updates(identical=True)
    out = method.aggregate(params, updates, context())
    for key in params:
        torch.testing.assert_close(out[key], updates[0].params[key], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spec", ["ties", "task_arithmetic", "ccvr"])
def test_defaults_that_are_not_fixed_points(spec: str) -> None:
    params, updates = make_updates(identical=True)
    out = parse_method(spec).aggregate(params, updates, context())
    assert any(not torch.allclose(out[k], updates[0].params[k]) for k in params)


def only_signals(updates, requires):
    """The updates carrying exactly the payloads ``requires`` asks clients for (covariances only with
    CLASS_COV), as a real client sends them."""
    out = []
    for u in updates:
        signals = {}
        if needs_class_stats(requires):
            stats = u.signals["class_stats"]
            signals["class_stats"] = stats if Signal.CLASS_COV in requires else dataclasses.replace(stats, cov=None)
        for signal in (Signal.LORA_SIGNAL, Signal.INPUT_GRAM, Signal.FISHER):  # {key: tensor} payloads
            if signal in requires:
                signals[signal.value] = u.signals[signal.value]
        out.append(dataclasses.replace(u, signals=signals))
    return out


SIGNAL_SPECS = NAMES + ["ccvr[model=pooled_full]", "ccvr[model=pooled_diag]", "livar[head=false]", "livar[lora=false]",
                        "livar+ccvr[model=pooled_full]"]


@pytest.mark.parametrize("name", SIGNAL_SPECS)
def test_declared_signals_are_enough_and_needed(name: str) -> None:
    """A method runs on exactly the signals it declares, and fails (rather than quietly falling back)
    without any one of them: ``requires`` is what clients compute, so it must be neither short nor long."""
    method = parse_method(name)
    params, updates = make_updates()
    state = method.init_state(params)
    step(method, state, only_signals(updates, method.requires))
    for signal in method.requires:
        if signal is Signal.CLASS_STATS and Signal.CLASS_COV in method.requires:
            continue  # the covariance signal carries the statistics too
        fewer = set(method.requires) - {signal}
        if signal is Signal.CLASS_COV:
            fewer.add(Signal.CLASS_STATS)  # the statistics stay, only the covariances go
        with pytest.raises(ValueError):
            step(method, state, only_signals(updates, frozenset(fewer)))


@pytest.mark.parametrize("name", NAMES)
def test_every_hyperparameter_is_described(name: str) -> None:
    """Each hyperparameter has a help text and what it may be: a range, choices, or examples of text."""
    for h in get_entry(name).hyperparameters():
        assert len(h.help) > 10, (name, h.name)
        assert h.range is not None or h.choices is not None or h.examples, (name, h.name)
        assert h.help in h.to_json()["help"] and h.default == get_entry(name).defaults()[h.name]


@pytest.mark.parametrize("name", NAMES)
def test_hyperparameters_have_defaults_and_render(name: str) -> None:
    entry = get_entry(name)
    spec = MethodSpec.parse(name)
    assert str(spec) in (name, f"fedavg+{name}")  # defaults are dropped from the canonical string
    assert set(spec.hyperparameters()) >= {f"{name}.{k}" for k in entry.defaults()}


@pytest.mark.parametrize("name", NAMES)
def test_what_clients_declare_is_what_the_server_does(name: str) -> None:
    """Tensors a method declares frozen come back unchanged from the server step (its clients cannot move
    them); tensors it declares personal are each client's own start in the next round."""
    method = parse_method(name)
    side = method.client_side
    params, updates = make_updates()
    for round_ in (1, 2):  # two rounds: a method may freeze different tensors by round (RoLoRA)
        moved = step(method, method.init_state(params), updates, round_=round_)
        for key in side.frozen_keys(params, round_):
            assert torch.equal(moved.params[key], params[key]), (key, round_)
    state = step(method, method.init_state(params), updates)
    for u in updates:
        start = method.client_start(state, u.client_id)
        for key in params:
            own = kind_of(key) in side.personal
            assert torch.equal(start[key], u.params[key] if own else state.params[key]), (key, own)
    assert method.personalised == bool(side.personal)
