"""MethodStrategy's rounds on real Flower messages, without a simulation (fast).

The replies are built as a ClientApp builds them (codec.encode_update, Message(..., reply_to=...)) or as
Flower reports a failed client (an Error reply). FedAvg's result is recomputed here from its formula.
"""

from __future__ import annotations

import pytest
import torch

from livar_bench.errors import BenchError
from livar_bench.methods.spec import MethodSpec
from livar_bench.types import ClientUpdate, RoundContext

flwr = pytest.importorskip("flwr")
from flwr.app import ArrayRecord, ConfigRecord, Error, Message  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from livar_bench.flower import codec  # noqa: E402
from livar_bench.flower.strategy import MethodStrategy  # noqa: E402

NODES = {0: 100, 1: 101, 2: 102}


@pytest.fixture(autouse=True)
def task_identity():
    """Messages need the identity of the running task, which Flower sets in a real run."""
    saved = TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 7, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


def _strategy(spec: str = "fedavg", clients: int = 3) -> MethodStrategy:
    method = MethodSpec.parse(spec).build()
    ctx = lambda r, extra: RoundContext(round=r, num_rounds=2, num_classes=2, lora_scale=1.0,  # noqa: E731
                                 generator=torch.Generator().manual_seed(r), extra_round=extra)
    strategy = MethodStrategy(method, run_spec="{}", num_clients=clients, sample=lambda r: list(range(clients)),
                              context=ctx)
    strategy.nodes = dict(list(NODES.items())[:clients])  # as if every node had answered the partition query
    g = torch.Generator().manual_seed(0)
    strategy.state = method.init_state({"m.lora_A": torch.randn(1, 3, generator=g), "head.bias": torch.zeros(2)})
    return strategy


def _reply(instruction: Message, cid: int, n: int, value: float) -> Message:
    update = ClientUpdate(client_id=cid, num_samples=n, class_counts=torch.tensor([n, 0]),
                          params={"m.lora_A": torch.full((1, 3), value), "head.bias": torch.full((2,), -value)})
    return Message(codec.encode_update(update, frozenset(), loss=value, images=n), reply_to=instruction)


def _failed(instruction: Message) -> Message:
    return Message(Error(code=0, reason="Exception ClientAppException occurred. Message: disk full"),
                   reply_to=instruction)


def test_instructions_carry_the_state_and_settings_to_each_client_node():
    strategy = _strategy()
    messages = list(strategy.configure_train(1, ArrayRecord(), ConfigRecord({"extra": 1}), grid=None))
    assert [m.metadata.dst_node_id for m in messages] == [100, 101, 102]
    for m in messages:
        params, deltas = codec.decode_download(m.content["global"])
        assert all(torch.equal(params[k], v) for k, v in strategy.state.params.items()) and deltas == {}
        assert (m.content["config"]["server-round"], m.content["config"]["extra"]) == (1, 1)
    assert all(w > 4 * 5 for w in strategy._sent)  # at least the 5 float32 values sent


def test_a_failed_client_is_left_out_of_the_aggregate():
    strategy = _strategy()
    sent = list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), grid=None))
    replies = [_reply(sent[0], 0, 1, 1.0), _failed(sent[1]), _reply(sent[2], 2, 3, 5.0)]
    _, metrics = strategy.aggregate_train(1, replies)
    # FedAvg of the two replies by sample count: (1 * 1 + 3 * 5) / 4 = 4.
    assert torch.allclose(strategy.state.params["m.lora_A"], torch.full((1, 3), 4.0))
    assert torch.allclose(strategy.state.params["head.bias"], torch.full((2,), -4.0))
    assert (metrics["clients-replied"], metrics["clients-failed"]) == (2, 1)
    assert [u.client_id for u in strategy.last.updates] == [0, 2]
    assert list(strategy.last.failed.values()) == ["Exception ClientAppException occurred. Message: disk full"]


def test_a_round_without_replies_is_an_error():
    strategy = _strategy()
    sent = list(strategy.configure_train(2, ArrayRecord(), ConfigRecord(), grid=None))
    with pytest.raises(BenchError, match=r"round 2: none of the 3 clients asked replied \(disk full\); .*"
                                         r"checkpoint of round 1"):
        strategy.aggregate_train(2, [_failed(m) for m in sent])


def test_a_method_needing_more_replies_says_so():
    from livar_bench.methods.base import Method, Stage

    class NeedsThree(Stage):
        min_replies = 3

        def __call__(self, params, updates, ctx):
            return params

    strategy = _strategy()
    m = strategy.method
    strategy.method = Method("fedavg+needs3", m.aggregator, (NeedsThree(),))
    sent = list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), grid=None))
    with pytest.raises(BenchError, match=r"fedavg\+needs3 needs at least 3 client replies per round, got 2 of 3"):
        strategy.aggregate_train(1, [_reply(sent[0], 0, 1, 1.0), _reply(sent[1], 1, 1, 1.0), _failed(sent[2])])


def _class_stats(g: torch.Generator, classes: int = 2, dim: int = 3):
    from livar_bench.client.signals import class_statistics

    labels = torch.arange(12) % classes
    feats = torch.randn(12, dim, generator=g)
    return class_statistics(feats, labels, torch.ones(12, dtype=torch.bool), classes, False)


class _Grid:
    """Answers an extra client round as ClientApps would (``codec.encode_signals``); node 101 fails."""

    def __init__(self, stats):
        self.stats, self.sent = stats, []

    def send_and_receive(self, messages, timeout):
        self.sent += list(messages)
        by_node = {node: k for k, node in NODES.items()}
        return [_failed(m) if m.metadata.dst_node_id == 101 else
                Message(codec.encode_signals({"class_stats": self.stats[by_node[m.metadata.dst_node_id]]}), reply_to=m)
                for m in messages]


def test_an_extra_client_round_over_flower_messages():
    from livar_bench.client.collectors import signal_bytes
    from livar_bench.client.costs import params_bytes
    from livar_bench.flower.strategy import FlowerExtraRound
    from livar_bench.types import ExtraRound, Signal

    strategy = _strategy()
    g = torch.Generator().manual_seed(3)
    stats = {k: _class_stats(g) for k in NODES}
    grid = _Grid(stats)
    list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), grid=grid))
    round_updates = [ClientUpdate(k, 10 + k, torch.tensor([5 + k, 5]), {}) for k in (2, 0, 1)]  # as replied
    extra = FlowerExtraRound(strategy, 1, round_updates)
    params = {"m.lora_A": torch.ones(1, 3), "head.bias": torch.zeros(2)}
    deltas = {"m": torch.full((4, 3), 0.5)}
    replies = extra(ExtraRound(params, frozenset({Signal.CLASS_STATS}), deltas))
    # the round's clients were asked (EVALUATE, the given model and corrections, the signals by name) ...
    assert [m.metadata.dst_node_id for m in grid.sent] == [102, 100, 101]
    for m in grid.sent:
        assert m.metadata.message_type == "evaluate" and m.content["config"]["signals"] == "class_stats"
        got, got_deltas = codec.decode_download(m.content["global"])
        assert all(torch.equal(got[k], params[k]) for k in params) and torch.equal(got_deltas["m"], deltas["m"])
    # ... the failed one is left out, the others come back in client order with their round's counts
    assert [(u.client_id, u.num_samples, u.params) for u in replies] == [(0, 10, {}), (2, 12, {})]
    assert torch.equal(replies[1].class_counts, torch.tensor([7, 5]))
    assert all(torch.equal(u.class_stats.mean, stats[u.client_id].mean) for u in replies)
    assert extra.upload_bytes == sum(sum(signal_bytes(u, {Signal.CLASS_STATS}).values()) for u in replies)
    # the model's tensors and the corrections it was asked with (the round's new ones), to each of 3 clients
    assert extra.download_bytes == 3 * (params_bytes(params) + params_bytes(deltas))
    assert extra.wire_upload > 0 and extra.calls == 1
    with pytest.raises(ValueError, match="no training signals"):
        extra(ExtraRound(params, frozenset({Signal.LORA_SIGNAL})))


def test_a_nonfinite_livar_signal_received_is_dropped_and_counted():
    """A Flower client (of another implementation) sends a NaN B-signal: the server counts it as zero, as
    the client side drops a non-finite step, instead of letting it make every module's weights uniform."""
    from livar_bench.types import Signal

    method = MethodSpec.parse("livar[head=false]").build()
    strategy = _strategy()
    strategy.method = method
    g = torch.Generator().manual_seed(0)
    strategy.state = method.init_state({"m.lora_A": torch.randn(1, 3, generator=g),
                                        "m.lora_B": torch.zeros(3, 1), "head.bias": torch.zeros(2)})
    sent = list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), grid=None))
    signals = [(1.0, 10.0), (2.0, float("nan")), (3.0, 5.0)]  # (A-signal, B-signal) per client

    def reply(cid: int) -> Message:
        a, b = signals[cid]
        update = ClientUpdate(client_id=cid, num_samples=1, class_counts=torch.tensor([1, 0]),
                              params={"m.lora_A": torch.full((1, 3), float(cid + 1)),
                                      "m.lora_B": torch.full((3, 1), float(cid + 1)), "head.bias": torch.zeros(2)},
                              signals={Signal.LORA_SIGNAL.value: {"m.lora_A": torch.tensor(a),
                                                                  "m.lora_B": torch.tensor(b)}})
        return Message(codec.encode_update(update, frozenset({Signal.LORA_SIGNAL}), loss=1.0, images=1),
                       reply_to=sent[cid])

    strategy.aggregate_train(1, [reply(k) for k in range(3)])
    # LIVAR's rule by hand with B = [10, 0, 5]: A quartiles of [1, 2, 3] are A25 = 1.5, A50 = 2; B60, B80 of
    # [0, 5, 10] are 6 and 8. Client 0: B > B80, A < A25 -> 0.19313978; clients 1, 2: B < B60 -> 0.03813978.
    raw = torch.tensor([0.19313978, 0.03813978, 0.03813978], dtype=torch.float64)
    expected = float((raw / raw.sum() * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum())
    assert torch.allclose(strategy.state.params["m.lora_A"], torch.full((1, 3), expected))
    assert torch.allclose(strategy.state.params["m.lora_B"], torch.full((3, 1), expected))
    assert [u.diagnostics.get("nonfinite_signals_received", 0.0) for u in strategy.last.updates] == [0.0, 1.0, 0.0]
    assert all(torch.isfinite(v).all() for u in strategy.last.updates for v in u.lora_signals.values())


def test_livar_refuses_a_nonfinite_signal_rather_than_weighting_uniformly():
    from livar_bench.methods.livar import lora_weights
    from livar_bench.methods.livar_rule import PAPER_RULE

    updates = [ClientUpdate(client_id=k, num_samples=1, class_counts=torch.tensor([1]), params={},
                            signals={"lora_signal": {"m.lora_A": torch.tensor(1.0), "m.lora_B": torch.tensor(b)}})
               for k, b in enumerate([1.0, float("inf")])]
    with pytest.raises(ValueError, match="LoRA signal reaching LIVAR's aggregator is not finite"):
        lora_weights(updates, ["m"], PAPER_RULE)
