"""The extra client round a stage may ask for (CCVR's features=global) and what it costs."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from livar_bench.client.costs import params_bytes
from livar_bench.client.extra_round import ExtraRoundPass
from livar_bench.client.signals import class_statistics
from livar_bench.client.train import LocalSettings, embed
from livar_bench.config import make_spec
from livar_bench.federation import run_federation, setup_run
from livar_bench.types import ExtraRound, Signal


def cost(frame: pd.DataFrame, metric: str) -> pd.Series:
    rows = frame[(frame["split"] == "cost") & (frame["metric"] == metric)]
    return rows.set_index("round")["value"]


def test_paper_preset_pays_one_global_pass_at_the_last_round(tmp_path, tiny_spec_values) -> None:
    values = {**tiny_spec_values, "rounds": 2}
    paper = pd.read_csv(run_federation(make_spec({**values, "method": "ccvr[preset=paper]"}), tmp_path).run_dir / "metrics.csv")
    fedavg = pd.read_csv(run_federation(make_spec({**values, "method": "fedavg"}), tmp_path).run_dir / "metrics.csv")
    assert list(cost(paper, "global_stats_s").index) == [2]  # calibrated once, after the last round
    assert cost(paper, "global_stats_s")[2] > 0
    # round 1: no statistics at all (features=global sends none during training); round 2: the pass
    assert cost(paper, "upload_bytes_per_client")[1] == cost(fedavg, "upload_bytes_per_client")[1]
    assert cost(paper, "upload_signal_bytes_per_client")[1] == 0
    extra_down = cost(paper, "download_bytes_per_client")[2] - cost(fedavg, "download_bytes_per_client")[2]
    assert extra_down == cost(fedavg, "download_bytes_per_client")[2]  # the final global model, once more
    assert cost(paper, "upload_signal_bytes_per_client")[2] > 0


def test_extra_round_returns_the_asked_signals_under_the_given_model(tiny_spec_values) -> None:
    s = setup_run(make_spec(tiny_spec_values))
    settings = LocalSettings(1, 32, 3e-3, 0.1, None)
    params = s.model.initial_params(torch.Generator().manual_seed(0))
    probe = ExtraRoundPass(s.model, {1: s.clients[1], 0: s.clients[0]}, s.eval_tf, s.bundle.num_classes, settings,
                           seed=0, round_=1)
    replies = probe(ExtraRound(params, frozenset({Signal.CLASS_COV})))
    assert [u.client_id for u in replies] == [0, 1] and all(u.params == {} for u in replies)
    assert [u.num_samples for u in replies] == [len(s.clients[0]), len(s.clients[1])]
    stats = [u.class_stats for u in replies]
    s.model.load_params(params)
    expected = []
    for k in (0, 1):  # each client's data through the model holding ``params``, statistics with covariances
        feats, logits = embed(s.model, s.clients[k].images, s.eval_tf, 256, None)
        labels = s.clients[k].labels
        expected.append(class_statistics(feats, labels, logits.argmax(1) == labels, s.bundle.num_classes, True))
    for got, want in zip(stats, expected, strict=True):  # client-id order
        assert torch.equal(got.count, want.count)
        torch.testing.assert_close(got.mean, want.mean)
    # two [C] int64 counts, three [C, D] float32 tensors and the [C, D, D] covariances per client
    per_client = [sum(t.numel() * t.element_size() for t in (x.count, x.count_correct, x.mean, x.var, x.var_correct, x.cov))
                  for x in expected]
    assert probe.upload_bytes == sum(per_client)
    assert probe.download_bytes == 2 * params_bytes(params)
    costs = probe.add_costs({"upload_bytes_per_client": 10.0, "download_bytes_per_client": 4.0}, 2)
    assert costs["upload_bytes_per_client"] == 10.0 + probe.upload_bytes / 2
    assert costs["download_bytes_per_client"] == 4.0 + probe.download_bytes / 2


def test_extra_round_applies_the_requested_base_corrections_and_refuses_training_signals(tiny_spec_values) -> None:
    s = setup_run(make_spec(tiny_spec_values))
    settings = LocalSettings(1, 32, 3e-3, 0.1, None)
    params = s.model.initial_params(torch.Generator().manual_seed(0))
    probe = ExtraRoundPass(s.model, {0: s.clients[0]}, s.eval_tf, s.bundle.num_classes, settings, seed=0, round_=1)
    plain = probe(ExtraRound(params, frozenset({Signal.CLASS_STATS})))[0].class_stats
    module = next(k[: -len(".lora_A")] for k in params if k.endswith(".lora_A"))
    weight = s.model.net.get_submodule(module).base_layer.weight
    before = weight.detach().clone()
    shifted = probe(ExtraRound(params, frozenset({Signal.CLASS_STATS}), {module: torch.ones_like(weight)}))[0]
    assert not torch.equal(shifted.class_stats.mean, plain.mean)  # the corrections reached the features
    assert torch.equal(weight, before)  # ... and were taken off again
    assert shifted.class_stats.cov is None  # covariances only when CLASS_COV is asked
    with pytest.raises(ValueError, match="no training signals \\(lora_signal\\)"):
        probe(ExtraRound(params, frozenset({Signal.LORA_SIGNAL})))
