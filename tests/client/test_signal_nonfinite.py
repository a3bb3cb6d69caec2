"""A non-finite step of LIVAR's path-integral signal contributes nothing, is counted and reported."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from livar_bench.client.collectors.lora_signal import LoraSignal
from livar_bench.client.objectives import CrossEntropy
from livar_bench.client.packed import packed_local_train
from livar_bench.client.train import LocalSettings, local_train
from livar_bench.data.offline import make_synthetic
from livar_bench.data.transforms import DeviceTransform
from livar_bench.models import build_model
from livar_bench.types import Signal


def test_signal_drops_a_nonfinite_step_by_hand() -> None:
    collector = LoraSignal()
    params = {"m.lora_A": torch.tensor([[1.0, 2.0]]), "m.lora_B": torch.tensor([[0.5]])}  # a client axis of 1
    state = collector.start(params)
    steps = [  # (grads, new values): |sum g * (before - after)| per factor, step by step
        ([[1.0, -2.0]], [[3.0]], [[0.5, 2.5]], [[0.0]]),
        ([[float("nan"), 1.0]], [[2.0]], [[0.0, 2.0]], [[-1.0]]),
        ([[1.0, 1.0]], [[float("inf")]], [[1.0, 1.0]], [[-2.0]]),
    ]
    for grad_a, grad_b, new_a, new_b in steps:
        collector.before_step(state, params)
        params["m.lora_A"].copy_(torch.tensor(new_a))
        params["m.lora_B"].copy_(torch.tensor(new_b))
        collector.after_step(state, params, {"m.lora_A": torch.tensor(grad_a), "m.lora_B": torch.tensor(grad_b)}, None)
    # A: step 1 |1 * 0.5 + (-2) * (-0.5)| = 1.5; step 2 NaN -> 0; step 3 |1 * (-1) + 1 * 1| = 0
    # B: step 1 |3 * 0.5| = 1.5; step 2 |2 * 1| = 2; step 3 inf -> 0
    sent = collector.payload(state, 0, None, frozenset({Signal.LORA_SIGNAL}))
    assert float(sent["m.lora_A"]) == 1.5 and float(sent["m.lora_B"]) == 3.5
    assert collector.diagnostics(state, 0) == {"nonfinite_signal_steps": 2.0}  # steps 2 and 3


def test_inactive_clients_of_a_pack_count_nothing() -> None:
    collector = LoraSignal()
    params = {"m.lora_A": torch.zeros(2, 1, 1), "m.lora_B": torch.zeros(2, 1, 1)}
    state = collector.start(params)
    collector.before_step(state, params)
    params["m.lora_A"].fill_(-1.0)
    nan = torch.full((2, 1, 1), float("nan"))
    collector.after_step(state, params, {"m.lora_A": nan, "m.lora_B": nan}, torch.tensor([[1.0], [0.0]]))
    assert [collector.diagnostics(state, i)["nonfinite_signal_steps"] for i in (0, 1)] == [1.0, 0.0]
    assert torch.equal(state.total, torch.zeros(2, 2))


class PoisonLastBatch:
    """Cross-entropy plus a term that is 0 but has a NaN gradient for one LoRA factor, on a client's
    short last batch only (d sqrt(0 * |x|) / dx = inf * 0): the loss stays finite, the signal does not."""

    def __init__(self, key: str, batch_size: int) -> None:
        self.key, self.batch_size = key, batch_size

    def __call__(self, logits, targets, params, anchor):
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        if len(targets) < self.batch_size:
            loss = loss + 0.0 * torch.sqrt(params[self.key].abs() * 0.0).sum()
        return loss


@pytest.fixture(scope="module")
def clients():
    bundle = make_synthetic(train_per_class=6, test_per_class=1)
    model, info = build_model("livar_micro_vit", bundle.num_classes, rank=2, alpha=4.0, pretrained=False)
    tf = DeviceTransform(info.input_size, info.mean, info.std, scale=(0.6, 1.0))
    g = torch.Generator().manual_seed(1)
    start = model.initial_params(g)
    for k in start:
        if k.endswith(".lora_B"):
            start[k] = torch.randn(start[k].shape, generator=g) * 0.1
    perm = torch.randperm(len(bundle.train), generator=g)
    datas = [bundle.train.subset(perm[:13]), bundle.train.subset(perm[13:29])]  # 13: short last batch; 16: none
    return model, tf, start, datas, bundle.num_classes


def test_sequential_and_packed_count_and_drop_the_same_steps(clients) -> None:
    model, tf, start, datas, num_classes = clients
    key = next(k for k in start if k.endswith(".lora_A"))
    settings = LocalSettings(epochs=1, batch_size=8, lr=3e-3, weight_decay=0.1)
    signals = frozenset({Signal.LORA_SIGNAL})

    def gens():
        return [torch.Generator().manual_seed(100 + k) for k in range(2)]

    poison = PoisonLastBatch(key, 8)
    seq = [local_train(model, start, d, tf, poison, settings, g, num_classes, signals, client_id=k)
           for k, (d, g) in enumerate(zip(datas, gens(), strict=True))]
    clean = [local_train(model, start, d, tf, CrossEntropy(), settings, g, num_classes, signals, client_id=k)
             for k, (d, g) in enumerate(zip(datas, gens(), strict=True))]
    packed = packed_local_train(model, start, datas, tf, poison, settings, gens(), num_classes, signals)
    assert [r.update.diagnostics["nonfinite_signal_steps"] for r in seq] == [1, 0]
    assert [r.update.diagnostics["nonfinite_signal_steps"] for r in packed] == [1, 0]
    for s, c, p in zip(seq, clean, packed, strict=True):
        for k, value in s.update.lora_signals.items():
            assert math.isfinite(float(value)), k
            torch.testing.assert_close(p.update.lora_signals[k], value, atol=1e-7, rtol=1e-4)
            if k != key:  # other factors: the poison term is 0 with a 0 gradient for them
                torch.testing.assert_close(value, c.update.lora_signals[k], atol=1e-7, rtol=1e-5)
    # client 0's poisoned factor lost exactly its last step: less than the clean signal
    assert float(seq[0].update.lora_signals[key]) < float(clean[0].update.lora_signals[key])


def test_run_reports_nonfinite_steps_once(tmp_path, tiny_spec_values, monkeypatch) -> None:
    from livar_bench.config import make_spec
    from livar_bench.federation import run_federation

    # The collector sees a NaN gradient of one factor in each client's first step; the optimiser does not,
    # so the model stays finite (a client whose parameters end non-finite fails the round instead:
    # tests/federation/test_nonfinite_global.py). The signal must stay finite and the steps be reported.
    spec = make_spec({**tiny_spec_values, "method": "livar", "rounds": 2})
    key, original_start, original_after = "blocks.0.attn.qkv.lora_A", LoraSignal.start, LoraSignal.after_step

    def start(self, params):
        state = original_start(self, params)
        state.poison_next = True
        return state

    def after_step(self, state, params, grads, active):
        if state.poison_next:  # each client's (or pack's) first step
            grads, state.poison_next = {**grads, key: torch.full_like(grads[key], float("nan"))}, False
        original_after(self, state, params, grads, active)

    monkeypatch.setattr(LoraSignal, "start", start)
    monkeypatch.setattr(LoraSignal, "after_step", after_step)
    events = []
    outcome = run_federation(spec, tmp_path, on_event=lambda e, **k: events.append((e, k)))
    frame = pd.read_csv(outcome.run_dir / "metrics.csv")
    rows = frame[(frame["split"] == "train") & (frame["metric"] == "nonfinite_signal_steps")]
    assert rows["round"].tolist() == [1, 2]
    assert rows["value"].tolist() == [spec.num_clients] * 2  # one step per client per round
    warnings = [k["message"] for e, k in events if e == "warning"]
    assert len(warnings) == 1 and "6 client step(s) had a non-finite LoRA signal" in warnings[0]
    fedavg = pd.read_csv(run_federation(spec.replace(method="fedavg"), tmp_path).run_dir / "metrics.csv")
    assert "nonfinite_signal_steps" not in set(fedavg["metric"])  # only methods that use the signal


def test_warning_event_prints_one_line(capsys) -> None:
    from livar_bench.cli.ui import RunProgress

    RunProgress(live=False)("warning", run_id="abc", message="run abc: 3 client step(s) had a non-finite LoRA signal")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: run abc: 3 client step(s)")
