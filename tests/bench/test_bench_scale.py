"""bench-scale: a fixed number of clients per round at any population, and the per-client state it reports."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from livar_bench.bench.scale import ScaleSettings, measure_here, participation, scale_data
from livar_bench.errors import BenchError
from tests._cli import invoke


@pytest.mark.parametrize("clients", [10, 100, 1000, 10_000, 12_345])
def test_participation_samples_exactly_the_asked_number(clients):
    p = participation(10, clients)
    assert math.ceil(p * clients) == 10 and 0 < p <= 1
    with pytest.raises(BenchError, match="between 1 and"):
        participation(clients + 1, clients)


def test_scale_data_is_seeded_balanced_uint8():
    a, b = scale_data(50, 20), scale_data(50, 20)
    assert a.train.images.dtype.is_floating_point is False and a.train.images.shape == (50, 3, 16, 16)
    assert (a.train.images == b.train.images).all() and a.train.labels.bincount().tolist() == [5] * 10


def test_rows_report_the_per_client_state_of_the_clients_seen(monkeypatch):
    settings = ScaleSettings(per_round=3, rounds=2, samples=120, steps=1, batch_size=4, test_samples=20)
    seen = {}
    import livar_bench.federation.loop as loop

    original = loop.run_federation

    def keep(spec, out, **kw):  # the rows of the run, to count the clients that replied
        outcome = original(spec, out, **kw)
        seen["frame"] = pd.read_csv(outcome.run_dir / "metrics.csv")
        return outcome

    monkeypatch.setattr("livar_bench.federation.run_federation", keep)
    fedavg = measure_here("fedavg", 40, settings)
    assert fedavg.client_state_bytes == 0 and fedavg.clients == 40 and fedavg.per_round == 3
    frame = seen["frame"]
    assert frame[(frame["split"] == "cost") & (frame["metric"] == "clients_sampled")]["value"].tolist() == [3.0, 3.0]
    steps = frame[(frame["split"] == "clients") & (frame["metric"] == "steps")]["value"]
    assert set(steps) == {1.0}  # every sampled client took exactly its one step
    fedsa = measure_here("fedsa_lora", 40, settings)
    clients = frame[frame["split"] == "clients"]["client"].nunique()  # the same plan: same seed and sampling
    from livar_bench.models import build_model

    model, _ = build_model("livar_micro_vit", 10, rank=2, alpha=2.0, pretrained=False)
    b_bytes = sum(v.numel() * v.element_size() for k, v in model.trainable.items() if k.endswith(".lora_B"))
    assert fedsa.client_state_bytes == clients * b_bytes  # one personal B per client seen, none for the others


@pytest.mark.parametrize("args, message", [
    (["--clients", "5", "--per-round", "10"], "between 1 and"),
    (["--methods", "nosuch"], "unknown method"),
    (["--clients", "10,100", "--samples", "50"], "100 clients need at least as many training samples; raise --samples"),
    (["--rounds", "0"], "rounds"),
    (["--steps", "0"], "local work steps"),
    (["--batch-size", "0"], "batch_size"),
    (["--backbone", "nosuch"], "unknown backbone 'nosuch'"),
    (["--clients", ","], "empty list"),
])
def test_bad_settings_are_one_line_before_any_run_starts(args, message, monkeypatch, capsys):
    started = []
    monkeypatch.setattr("livar_bench.bench.scale.measure", lambda *a: started.append(a))
    code, out, err = invoke(["bench-scale", "--methods", "fedavg", *args], monkeypatch, capsys)
    assert code == 2 and err.count("error:") == 1 and message in err, err
    assert started == [] and out == ""  # refused before the first process, so no partial table either


@pytest.mark.slow
def test_ten_thousand_clients_with_ten_per_round_run_on_one_machine():
    row = measure_here("fedsa_lora", 10_000, ScaleSettings(rounds=2, samples=20_000, steps=2, test_samples=50))
    assert row.clients == 10_000 and row.per_round == 10
    assert 0 < row.client_state_bytes  # the personal B of the (at most 20) clients seen, nothing for the rest
