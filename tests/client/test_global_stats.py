"""The extra client pass over the global model (CCVR's features=global) and what it costs."""

from __future__ import annotations

import pandas as pd
import torch

from livar_bench.client.costs import params_bytes
from livar_bench.client.global_stats import GlobalStatsPass
from livar_bench.client.signals import class_statistics
from livar_bench.client.train import LocalSettings, embed
from livar_bench.config import make_spec
from livar_bench.federation import run_federation, setup_run


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


def test_global_pass_returns_statistics_under_the_given_params(tiny_spec_values) -> None:
    s = setup_run(make_spec(tiny_spec_values))
    settings = LocalSettings(1, 32, 3e-3, 0.1, None)
    params = s.model.initial_params(torch.Generator().manual_seed(0))
    probe = GlobalStatsPass(s.model, {1: s.clients[1], 0: s.clients[0]}, s.eval_tf, s.bundle.num_classes, settings)
    stats = probe(params, True)
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
