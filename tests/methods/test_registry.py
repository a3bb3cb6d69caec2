"""Methods that describe themselves: @describe, register (twice, as a preset), declared hyperparameters,
namespaces of a stage used twice."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Annotated

import pytest
import torch
from pydantic import Field

from livar_bench.config import make_spec
from livar_bench.errors import BenchError
from livar_bench.methods import (
    Aggregator,
    ClientUpdate,
    FedAvgM,
    MethodSpec,
    RoundContext,
    ServerState,
    Stage,
    describe,
    display_name,
    entries,
    get_entry,
    parse_method,
    registry,
)
from livar_bench.methods.buffers import per_tensor
from tests.methods._fakes import context, make_updates


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that the test may add to (undone afterwards)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@describe("ema", paper="-", summary="test stage: exponential moving average of the global params over rounds")
class MovingAverage(Stage):
    """avg_t = decay * avg_{t-1} + (1 - decay) * x_t (avg_0 = x_1); the new params are avg_t."""

    decay: Annotated[float, Field(ge=0, lt=1, description="weight of the previous average")] = 0.5

    def apply(self, previous: ServerState, new: ServerState, updates: Sequence[ClientUpdate],
              ctx: RoundContext) -> ServerState:
        def step(key, x, buffers):
            avg = x if ctx.round == 1 else self.decay * buffers["avg"] + (1 - self.decay) * x
            return avg, {"avg": avg}

        return per_tensor(new, self.namespace, {"avg": torch.zeros_like}, step)


def test_a_stateful_stage_used_twice_keeps_two_sets_of_buffers(scratch_registry) -> None:
    registry.register(MovingAverage)
    spec = MethodSpec.parse("fedavg+ema+ema[decay=0.9]")
    assert [c.namespace for c in spec.components] == ["fedavg", "ema", "ema#2"]
    assert set(spec.hyperparameters()) == {"fedavg.space", "ema.decay", "ema#2.decay"}
    assert str(spec.with_param("ema#2", "decay", "0.25")) == "fedavg+ema+ema[decay=0.25]"
    method = spec.build()
    glob = {"w": torch.tensor([0.0])}
    rounds = [[ClientUpdate(0, 1, torch.zeros(1), {"w": torch.tensor([w])})] for w in (4.0, 8.0, 2.0)]
    # By hand: first stage a1 = 4, a2 = .5*4 + .5*8 = 6, a3 = .5*6 + .5*2 = 4; the second averages the first's
    # output: b1 = 4, b2 = .9*4 + .1*6 = 4.2, b3 = .9*4.2 + .1*4 = 4.18.
    state, seen = method.init_state(glob), []
    for r, ups in enumerate(rounds, start=1):
        state = method.server_step(state, ups, context(round_=r))
        seen.append((float(state.buffers["ema.avg.w"]), float(state.buffers["ema#2.avg.w"]), float(state.params["w"])))
    assert seen == [pytest.approx((4, 4, 4)), pytest.approx((6, 4.2, 4.2)), pytest.approx((4, 4.18, 4.18))]
    # Resume: one round, save/load, a freshly built method for the rest gives the same state.
    resumed = method.server_step(method.init_state(glob), rounds[0], context(round_=1))
    buffer = io.BytesIO()
    torch.save(resumed.to_dict(), buffer)
    buffer.seek(0)
    resumed = ServerState.from_dict(torch.load(buffer, weights_only=False))
    again = parse_method("fedavg+ema+ema[decay=0.9]")
    for r, ups in enumerate(rounds[1:], start=2):
        resumed = again.server_step(resumed, ups, context(round_=r))
    assert all(torch.equal(resumed.buffers[k], state.buffers[k]) for k in state.buffers)


def test_one_class_registered_twice_is_two_methods(scratch_registry) -> None:
    registry.register(FedAvgM, name="fedavgm_slow", label="FedAvgM (slow)", defaults={"eta": 0.5})
    entry = get_entry("fedavgm_slow")
    assert entry.cls is FedAvgM and entry.kind == "method" and entry.paper == get_entry("fedavgm").paper
    assert entry.defaults() == {"eta": 0.5, "momentum": 0.9}
    assert [h.default for h in entry.hyperparameters()] == [0.5, 0.9]
    # Its own name in spec strings: its defaults are dropped, the class's default is not one of its own.
    assert str(MethodSpec.parse("fedavgm_slow[eta=0.5]")) == "fedavgm_slow"
    assert str(MethodSpec.parse("fedavgm_slow[eta=1]")) == "fedavgm_slow[eta=1.0]"
    assert display_name("fedavgm_slow+ccvr") == "FedAvgM (slow) + CCVR"
    # Same numbers as the class with those values, under its own buffer namespace.
    params, updates = make_updates()
    preset, plain = parse_method("fedavgm_slow"), parse_method("fedavgm[eta=0.5]")
    a = preset.server_step(preset.init_state(params), updates, context())
    b = plain.server_step(plain.init_state(params), updates, context())
    assert sorted(a.buffers) == sorted(k.replace("fedavgm.", "fedavgm_slow.", 1) for k in b.buffers)
    assert all(torch.equal(a.buffers[k.replace("fedavgm.", "fedavgm_slow.", 1)], b.buffers[k]) for k in b.buffers)
    assert all(torch.equal(a.params[k], b.params[k]) for k in params)
    # ... and its own run ids: the name is part of the spec string.
    assert make_spec({"method": "fedavgm_slow"}).run_id != make_spec({"method": "fedavgm[eta=0.5]"}).run_id


def test_registration_mistakes_are_caught_at_import(scratch_registry) -> None:
    with pytest.raises(TypeError, match="takes the class now"):
        registry.register("median", kind="method", paper="-", summary="x")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(FedAvgM)

    class Undescribed(FedAvgM):
        pass

    with pytest.raises(TypeError, match="has no @describe"):
        registry.register(Undescribed)
    with pytest.raises(BenchError, match="fedavgm_bad.momentum: cannot use 1.5"):
        registry.register(FedAvgM, name="fedavgm_bad", defaults={"momentum": 1.5})
    with pytest.raises(TypeError, match="no help text"):
        @describe("silent", paper="-", summary="x")
        class Silent(Aggregator):
            k: int = 1
    with pytest.raises(TypeError, match="must subclass Aggregator"):
        registry.register(describe("loose", paper="-", summary="x")(type("Loose", (), {})))


def out_of_range(h):
    """A spec-string value outside what ``h`` allows (None where every value of its type is allowed)."""
    if h.choices is not None:
        return "nosuchchoice"
    if h.low is not None:
        return str(h.low - 1)
    if h.high is not None:
        return str(h.high + 1)
    return "inf" if h.kind == "float" else None


CASES = [(e.name, h) for e in entries() for h in e.hyperparameters() if out_of_range(h) is not None]


@pytest.mark.parametrize(("name", "h"), CASES, ids=[f"{n}.{h.name}" for n, h in CASES])
def test_a_bad_value_names_the_method_key_range_and_help(name, h) -> None:
    with pytest.raises(BenchError) as err:
        MethodSpec.parse(f"{name}[{h.name}={out_of_range(h)}]")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{name}.{h.name}: cannot use ")
    assert h.allowed in message and h.help in message


@pytest.mark.parametrize(("name", "key", "raw", "typed"), [
    ("ccvr", "epochs", "none", None), ("ccvr", "epochs", "NULL", None), ("ccvr", "epochs", "", None),  # optional
    ("ccvr", "model", "POOLED_Diag", "pooled_diag"),  # choices in any case
    ("ties", "sign_election", "Off", False), ("ties", "sign_election", "yes", True), ("ties", "sign_election", "0", False),
    ("ties", "sign_election", "on", True), ("ccvr", "epochs", "7", 7), ("ties", "lam", "-2.5", -2.5),
    ("ties", "lam", "1e-3", 0.001), ("ties", "lam", "1", 1.0), ("livar", "rule", "My Rule.json", "My Rule.json"),
])
def test_spec_strings_are_typed_from_the_declarations(name: str, key: str, raw: str, typed) -> None:
    value = get_entry(name).coerce(key, raw)
    assert value == typed and type(value) is type(typed)
    assert str(MethodSpec.parse("ccvr[epochs=none]")) == "fedavg+ccvr[epochs=None]"  # rendered as before


@pytest.mark.parametrize("text", ["ccvr[epochs=3.5]", "ties[lam=nan]", "ties[density=inf]", "ties[sign_election=2]",
                                  "ties[lam=none]", "ties[reduce=median]"])
def test_values_outside_the_declarations_are_refused(text: str) -> None:
    with pytest.raises(BenchError, match="cannot use"):
        MethodSpec.parse(text)
