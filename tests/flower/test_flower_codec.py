"""The Flower wire format (livar_bench/flower/codec.py) and the engine's failure-free plumbing.

Fast: no simulation runs here (tests/flower/test_flower_engine.py, marked slow, runs Flower end to end).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from livar_bench.methods.spec import MethodSpec
from livar_bench.types import ClassStats, ClientUpdate, ServerState, Signal

flwr = pytest.importorskip("flwr")
from livar_bench.flower import codec  # noqa: E402

ALL = frozenset(Signal)


def _stats(c: int, d: int, g: torch.Generator, cov: bool) -> ClassStats:
    return ClassStats(count=torch.randint(0, 9, (c,), generator=g), mean=torch.randn(c, d, generator=g),
                      var=torch.rand(c, d, generator=g), count_correct=torch.randint(0, 9, (c,), generator=g),
                      var_correct=torch.rand(c, d, generator=g),
                      cov=torch.randn(c, d, d, generator=g) if cov else None)


def _update(c: int = 3, d: int = 4, r: int = 2, seed: int = 0, cov: bool = True) -> ClientUpdate:
    g = torch.Generator().manual_seed(seed)
    params = {"blocks.0.attn.qkv.lora_A": torch.randn(r, d, generator=g),
              "blocks.0.attn.qkv.lora_B": torch.randn(3 * d, r, generator=g),
              "head.weight": torch.randn(c, d, generator=g), "head.bias": torch.randn(c, generator=g)}
    lora = {k: torch.rand((), generator=g) for k in params if ".lora_" in k}
    return ClientUpdate(client_id=2, num_samples=17, class_counts=torch.tensor([5, 0, 12][:c] + [1] * (c - 3)),
                        params=params, signals={"class_stats": _stats(c, d, g, cov), "lora_signal": lora})


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def test_update_round_trip_with_every_signal_and_readable_names():
    update = _update()
    content = codec.encode_update(update, ALL, loss=0.25, images=34)
    names = set(content["update"].keys())
    assert {"params/blocks.0.attn.qkv.lora_A", "params/head.weight", "meta/class_counts",
            "signal/class_stats/mean", "signal/class_stats/cov",
            "signal/lora_signal/blocks.0.attn.qkv.lora_B"} <= names
    back, loss, images = codec.decode_update(content)
    assert (back.client_id, back.num_samples, loss, images) == (2, 17, 0.25, 34)
    assert _same(back.class_counts, update.class_counts)
    assert list(back.params) == list(update.params)  # order kept: aggregators may iterate the keys
    assert all(_same(back.params[k], v) for k, v in update.params.items())
    s0, s1 = update.class_stats, back.class_stats
    for field in ("count", "mean", "var", "count_correct", "var_correct", "cov"):
        assert _same(getattr(s1, field), getattr(s0, field)), field
    assert all(_same(back.lora_signals[k], v) for k, v in update.lora_signals.items())


def test_diagnostics_travel_as_metrics():
    import dataclasses

    update = dataclasses.replace(_update(), diagnostics={"nonfinite_signal_steps": 3.0})
    content = codec.encode_update(update, ALL, loss=0.0, images=0)
    assert content["metrics"]["diag/nonfinite_signal_steps"] == 3.0
    assert codec.decode_update(content)[0].diagnostics == {"nonfinite_signal_steps": 3.0}


def test_client_lora_scale_travels_only_when_set():
    import dataclasses

    plain = codec.decode_update(codec.encode_update(_update(), ALL, loss=0.0, images=0))[0]
    assert plain.lora_scale is None
    own = dataclasses.replace(_update(), lora_scale=0.5)
    assert codec.decode_update(codec.encode_update(own, ALL, loss=0.0, images=0))[0].lora_scale == 0.5


@pytest.mark.parametrize("spec,expected", [
    ("fedavg", set()),
    ("livar", {"class_stats", "lora_signal"}),
    ("fedavg+ccvr", {"class_stats"}),
])
def test_only_the_signals_the_method_requires_are_sent(spec, expected):
    requires = MethodSpec.parse(spec).build().requires
    content = codec.encode_update(_update(), requires, loss=1.0, images=1)
    sent = {k.split("/")[1] for k in content["update"].keys() if k.startswith("signal/")}
    assert sent == expected
    back, _, _ = codec.decode_update(content)
    assert set(back.signals) == expected
    if "class_stats" in expected:  # covariances only for CCVR
        assert (back.class_stats.cov is not None) == (Signal.CLASS_COV in requires)


def test_download_round_trip_with_base_deltas():
    g = torch.Generator().manual_seed(3)
    state = ServerState(params={"blocks.1.mlp.fc1.lora_A": torch.randn(2, 5, generator=g),
                                "head.bias": torch.randn(4, generator=g)},
                        buffers={"fedadam.m.head.bias": torch.ones(4)},  # server-only: never sent
                        base_deltas={"blocks.1.mlp.fc1": torch.randn(7, 5, generator=g)})
    record = codec.encode_download(state)
    assert list(record.keys()) == ["params/blocks.1.mlp.fc1.lora_A", "params/head.bias", "base_delta/blocks.1.mlp.fc1"]
    params, deltas = codec.decode_download(record)
    assert all(_same(params[k], v) for k, v in state.params.items())
    assert _same(deltas["blocks.1.mlp.fc1"], state.base_deltas["blocks.1.mlp.fc1"])
    assert codec.decode_inputs(record) is None  # a method whose objective reads nothing from the server


def test_download_carries_the_objectives_inputs():
    """SCAFFOLD's per-client correction c - c_i travels as ``input/<key>`` next to the params."""
    g = torch.Generator().manual_seed(4)
    state = ServerState(params={"head.bias": torch.randn(4, generator=g)})
    inputs = {"head.bias": torch.randn(4, generator=g)}
    record = codec.encode_download(state, inputs)
    assert list(record.keys()) == ["params/head.bias", "input/head.bias"]
    params, deltas = codec.decode_download(record)
    assert list(params) == ["head.bias"] and deltas == {}
    assert _same(codec.decode_inputs(record)["head.bias"], inputs["head.bias"])


@settings(max_examples=25, deadline=None)
@given(c=st.integers(1, 6), d=st.integers(1, 8), r=st.integers(1, 4), seed=st.integers(0, 2**16), cov=st.booleans())
def test_round_trip_is_exact_and_overhead_is_bounded(c, d, r, seed, cov):
    from livar_bench.client.costs import upload_bytes

    update = _update(max(c, 3), d, r, seed, cov)
    requires = ALL if cov else frozenset({Signal.CLASS_STATS, Signal.LORA_SIGNAL})
    content = codec.encode_update(update, requires, loss=0.5, images=3)
    back, _, _ = codec.decode_update(content)
    assert all(_same(back.params[k], v) for k, v in update.params.items())
    # What the record weighs on the wire vs what the cost columns count: every counted byte is there,
    # plus a bounded overhead per array entry (npy header, dtype/shape, name, object ids) and per record.
    counted = upload_bytes(update, requires)
    entries = len(content["update"])
    wire = codec.record_bytes(content)
    assert counted <= wire <= counted + entries * codec.ENTRY_OVERHEAD_BOUND + codec.RECORD_OVERHEAD_BOUND


def test_identical_arrays_each_count_on_the_wire():
    # Flower keys children by content hash; the size must still count both zero factors.
    state = ServerState(params={"a.lora_B": torch.zeros(64, 8), "b.lora_B": torch.zeros(64, 8)})
    one = codec.record_bytes(flwr.app.RecordDict({"g": codec.encode_download(state.evolve(params={"a.lora_B": torch.zeros(64, 8)}))}))
    two = codec.record_bytes(flwr.app.RecordDict({"g": codec.encode_download(state)}))
    assert two - one >= 64 * 8 * 4


def test_decode_refuses_an_unknown_entry():
    content = codec.encode_update(_update(), ALL, loss=0.0, images=0)
    content["update"]["weights/x"] = flwr.app.Array(torch.zeros(1))
    with pytest.raises(ValueError, match="weights/x"):
        codec.decode_update(content)


def test_min_replies_is_the_largest_of_the_components():
    from livar_bench.methods.base import Method, Stage

    method = MethodSpec.parse("livar+ccvr").build()
    assert method.min_replies == 1

    class NeedsThree(Stage):
        min_replies = 3

    assert Method("x", method.aggregator, (*method.stages, NeedsThree())).min_replies == 3


def test_failure_reasons_become_one_short_line():
    from livar_bench.flower.strategy import short_reason

    remote = ("<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor.run()"
              "\x1b[39m (pid=1)\n    ^^^^\nflwr.clientapp.client_app.ClientAppException: \nException "
              "ClientAppException occurred. Message: client 2 failed in round 2 (LIVAR_BENCH_FLOWER_FAIL)\n")
    assert short_reason(remote) == "client 2 failed in round 2 (LIVAR_BENCH_FLOWER_FAIL)"
    assert short_reason("first\nsecond line\n") == "second line"
    assert short_reason("") == "unknown error"
    long = short_reason("y" * 500)
    assert len(long) == 160 and long.endswith("...")


def test_a_dataclass_payload_the_codec_cannot_rebuild_is_refused():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Sketch:
        rows: torch.Tensor

    update = dataclasses.replace(_update(), signals={"lora_signal": Sketch(torch.zeros(2))})
    with pytest.raises(ValueError, match="PAYLOAD_TYPES"):
        codec.encode_update(update, ALL, loss=0.0, images=0)


def test_local_steps_travel_with_the_update():
    import dataclasses

    assert codec.decode_update(codec.encode_update(_update(), ALL, loss=0.0, images=0))[0].num_steps is None
    own = dataclasses.replace(_update(), num_steps=7)
    assert codec.decode_update(codec.encode_update(own, ALL, loss=0.0, images=0))[0].num_steps == 7
