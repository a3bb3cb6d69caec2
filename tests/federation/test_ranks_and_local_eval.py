"""Heterogeneous client ranks (zero-padded components stay zero, per-client scale) and --eval-local."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from livar_bench.client.objectives import CrossEntropy
from livar_bench.client.phase import train_clients
from livar_bench.client.train import LocalSettings
from livar_bench.config import make_spec
from livar_bench.errors import BenchError
from livar_bench.federation import run_federation, setup_run, with_rank
from livar_bench.federation.setup import local_test_sets
from livar_bench.seeding import STREAM_INIT, generator


def test_with_rank_zeroes_the_extra_components() -> None:
    params = {"m.lora_A": torch.ones(3, 4), "m.lora_B": torch.ones(5, 3), "head.bias": torch.ones(2)}
    out = with_rank(params, 1)
    assert out["m.lora_A"][1:].abs().sum() == 0 and out["m.lora_A"][0].sum() == 4
    assert out["m.lora_B"][:, 1:].abs().sum() == 0 and out["m.lora_B"][:, 0].sum() == 5
    assert out["head.bias"] is params["head.bias"]


@pytest.mark.parametrize("pack", [1, 2])
def test_a_low_rank_client_trains_a_low_rank_adapter(pack, tiny_spec_values) -> None:
    spec = make_spec({**tiny_spec_values, "lora_rank": 2})
    s = setup_run(spec)
    start = with_rank(s.model.initial_params(generator(0, STREAM_INIT)), 1)
    start = {k: (v + 0.01 if k.endswith(".lora_B") else v) for k, v in start.items()}  # B non-zero on rank 0
    start = with_rank(start, 1)
    with s.model.scaled(2.0):
        results = train_clients(s.model, start, dict(enumerate(s.clients[:2])), s.train_tf, CrossEntropy(),
                                LocalSettings(1, 32, 3e-2, 0.1), seed=0, round_=1, num_classes=s.bundle.num_classes,
                                pack=pack)
    assert s.model.scale == spec.lora_alpha / spec.lora_rank  # restored
    for r in results.values():
        for key, value in r.update.params.items():
            if key.endswith(".lora_A"):
                assert value[1:].abs().sum() == 0 and not torch.equal(value[0], start[key][0]), key
            elif key.endswith(".lora_B"):
                assert value[:, 1:].abs().sum() == 0 and not torch.equal(value[:, 0], start[key][:, 0]), key


def test_flora_with_mixed_ranks_records_client_scales(tmp_path, tiny_spec_values, monkeypatch) -> None:
    from livar_bench.methods.base import Method

    seen = []
    original = Method.server_step

    def observe(self, state, updates, ctx):
        seen.append([(u.client_id, u.lora_scale) for u in updates])
        return original(self, state, updates, ctx)

    monkeypatch.setattr(Method, "server_step", observe)
    spec = make_spec({**tiny_spec_values, "method": "flora", "client_ranks": (1, 2), "lora_alpha": 4.0, "rounds": 1})
    run_federation(spec, tmp_path)
    assert seen == [[(0, 4.0), (1, 2.0), (2, 4.0)]]  # alpha / r_k with ranks cycled 1, 2, 1


def test_constant_rank_scale_is_the_flora_authors_alpha_of_two_r(tmp_path, tiny_spec_values, monkeypatch) -> None:
    """FLoRA's code gives client k lora_alpha = 2 r_k, so every client's scale is 2 r_k / r_k = 2 (issue 24):
    --rank-scale constant with --lora-alpha 2 x max rank (4 for ranks 1, 2) trains every client at scale 2."""
    from livar_bench.methods.base import Method

    seen = []
    original = Method.server_step

    def observe(self, state, updates, ctx):
        seen.append([(u.client_id, u.lora_scale) for u in updates])
        return original(self, state, updates, ctx)

    monkeypatch.setattr(Method, "server_step", observe)
    ranks = (1, 2)
    spec = make_spec({**tiny_spec_values, "method": "flora", "client_ranks": ranks, "lora_alpha": 4.0, "rounds": 1,
                      "rank_scale": "constant"})
    run_federation(spec, tmp_path)
    authors = [2 * ranks[k % 2] / ranks[k % 2] for k in range(3)]  # alpha_k / r_k with alpha_k = 2 r_k
    assert seen == [[(k, authors[k]) for k in range(3)]]
    default = {**tiny_spec_values, "method": "flora", "client_ranks": ranks, "lora_alpha": 4.0, "rounds": 1}
    assert make_spec(default).run_id != spec.run_id
    same = {**tiny_spec_values, "method": "fedavg"}  # equal ranks: both rules agree, and so do the ids
    assert make_spec({**same, "rank_scale": "constant"}).run_id == make_spec(same).run_id


@pytest.mark.parametrize("method", ["livar", "fedavg", "ties", "fedex_lora", "fedsa_lora", "ffa_lora"])
def test_methods_that_cannot_mix_ranks_refuse(method, tiny_spec_values) -> None:
    with pytest.raises(BenchError, match="methods that can: .*flora, flexlora, hetlora.*fedavg\\[space=product\\]"):
        make_spec({**tiny_spec_values, "method": method, "client_ranks": (1, 2)})
    make_spec({**tiny_spec_values, "method": method, "client_ranks": (2, 2)})  # equal ranks are fine


def test_local_test_sets_follow_each_clients_labels(tiny_spec_values) -> None:
    spec = make_spec({**tiny_spec_values, "eval_local": True})
    s = setup_run(spec)
    labels = [c.labels.cpu() for c in s.clients]
    sets = local_test_sets(spec, s.test, labels, s.bundle.num_classes)
    assert sets.keys() == set(range(spec.num_clients))
    test_labels = s.test.labels.cpu().numpy()
    for k, ix in sets.items():
        own = np.bincount(labels[k].numpy(), minlength=s.bundle.num_classes) / len(labels[k])
        got = np.bincount(test_labels[ix.numpy()], minlength=s.bundle.num_classes)
        size = min(200, len(test_labels))
        available = np.bincount(test_labels, minlength=s.bundle.num_classes)
        assert (got == np.minimum(np.round(own * size), available)).all()
        assert len(np.unique(ix.numpy())) == len(ix)  # without replacement
    again = local_test_sets(spec, s.test, labels, s.bundle.num_classes)
    assert all(torch.equal(sets[k], again[k]) for k in sets)  # seeded: the same for every method of a cell


def test_eval_local_rows_and_run_id(tmp_path, tiny_spec_values) -> None:
    plain = make_spec(tiny_spec_values)
    local = make_spec({**tiny_spec_values, "eval_local": True, "rounds": 1})
    assert plain.run_id == make_spec({**tiny_spec_values, "eval_local": False}).run_id  # old ids unchanged
    rows = pd.read_csv(run_federation(local, tmp_path).run_dir / "metrics.csv")
    local_rows = rows[rows["split"] == "test_local"].set_index("metric")["value"]
    assert set(local_rows.index) == {"acc", "acc_worst10", "loss"}
    assert 0 <= local_rows["acc_worst10"] <= local_rows["acc"] <= 1
