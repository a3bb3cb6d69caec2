"""Shared first round: reused round-1 client updates give bit-identical runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import pandas as pd
import pytest
import torch

from livar_bench.config import make_spec
from livar_bench.federation import run_federation
from livar_bench.federation.round1_cache import Round1Cache, round1_key
from livar_bench.methods import (
    Aggregator,
    ClientUpdate,
    Params,
    RoundContext,
    Signal,
    describe,
    parse_method,
)
from livar_bench.methods import registry as reg
from livar_bench.store import load_tensors

SIGNAL_METHOD = "test_signal_weighted"


@describe(SIGNAL_METHOD, paper="test", summary="test only")
class SignalWeighted(Aggregator):
    """Test aggregator whose result depends on every cheap signal: clients weighted by their summed
    path-integral signal times their mean class variance (any change in a signal changes the output)."""

    requires: ClassVar[frozenset[Signal]] = frozenset({Signal.LORA_SIGNAL, Signal.CLASS_STATS})

    def __call__(self, global_params: Params, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Params:
        raw = torch.stack([sum(u.lora_signals.values()) * u.class_stats.var.mean() for u in updates])
        w = raw / raw.sum()
        return {k: sum(wi * u.params[k] for wi, u in zip(w, updates, strict=True)) for k in global_params}


@pytest.fixture
def signal_method():
    """Register the test aggregator for the duration of one test only."""
    if SIGNAL_METHOD not in reg._REGISTRY:
        reg.register(SignalWeighted)
    yield SIGNAL_METHOD
    reg._REGISTRY.pop(SIGNAL_METHOD, None)


def _metrics(outcome) -> pd.DataFrame:
    frame = pd.read_csv(outcome.run_dir / "metrics.csv")
    return frame[frame["split"].isin(["test", "train"])][["round", "split", "metric", "value"]].reset_index(drop=True)


@pytest.mark.parametrize("second", ["livar", "ccvr", "ccvr[model=pooled_full]", SIGNAL_METHOD])
def test_reused_round1_is_bit_identical(tmp_path, tiny_spec_values, signal_method, second):
    base = make_spec(tiny_spec_values)
    shared_out, plain_out = tmp_path / "shared", tmp_path / "plain"
    # fedavg asks for no signal; with sharing it still collects the cheap ones for later methods.
    run_federation(base, shared_out, share_round1=True)
    files = list((shared_out / "cache" / "round1").glob("*.pt"))
    assert len(files) == 1
    stat = files[0].stat()
    stamp = (stat.st_ino, stat.st_mtime_ns)  # os.replace gives a rewritten file a new inode
    spec = base.replace(method=second)
    reused = run_federation(spec, shared_out, share_round1=True)
    if second == "ccvr[model=pooled_full]":  # needs covariances, which the file lacked: trained again, file rewritten
        assert (files[0].stat().st_ino, files[0].stat().st_mtime_ns) != stamp
        assert Signal.CLASS_COV in load_tensors(files[0])["signals"]
    else:  # read, not rewritten: round 1 was not retrained
        assert (files[0].stat().st_ino, files[0].stat().st_mtime_ns) == stamp
    fresh = run_federation(spec, plain_out)
    pd.testing.assert_frame_equal(_metrics(reused), _metrics(fresh), check_exact=True)
    # and fedavg itself is unchanged by collecting signals it does not need
    fedavg_plain = run_federation(base, plain_out)
    fedavg_shared = run_federation(base, shared_out)  # already done: reads the stored metrics
    pd.testing.assert_frame_equal(_metrics(fedavg_shared), _metrics(fedavg_plain), check_exact=True)


def test_key_depends_on_client_side_only(tiny_spec_values):
    spec = make_spec(tiny_spec_values)
    cpu = torch.device("cpu")
    ce = parse_method("fedavg")
    prox = parse_method("fedprox[mu=0.1]")
    key = round1_key(spec, ce, cpu)
    # Methods whose clients train alike share round 1; the key comes from what they declare (client_side)
    for alike in ("livar", "ties+ccvr", "fedadam", "fedams"):
        assert round1_key(spec, parse_method(alike), cpu) == key, alike
    frozen, personal = round1_key(spec, parse_method("ffa_lora"), cpu), round1_key(spec, parse_method("fedsa_lora"), cpu)
    assert len({key, frozen, personal}) == 3  # frozen A, personal B: clients train (or start) differently
    assert round1_key(spec.replace(rounds=7), ce, cpu) == key  # run length: irrelevant to round 1
    assert round1_key(spec.replace(device="cpu", eval_batch_size=3), ce, cpu) == key
    assert round1_key(spec, prox, cpu) != key  # a different client objective trains differently
    assert round1_key(spec.replace(lr=1e-3), ce, cpu) != key
    assert round1_key(spec.replace(seed=1), ce, cpu) != key
    assert round1_key(spec, ce, torch.device("meta")) != key


def test_load_requires_every_asked_signal(tmp_path, tiny_spec_values):
    spec = make_spec(tiny_spec_values)
    run_federation(spec, tmp_path, share_round1=True, round1_signals=frozenset({Signal.LORA_SIGNAL}))
    method = parse_method("fedavg")
    cache = Round1Cache.for_run(tmp_path, spec, method, torch.device("cpu"))
    hit = cache.load({Signal.LORA_SIGNAL})
    assert hit is not None and all(u.lora_signals is not None and u.class_stats is None for u in hit.updates)
    none = cache.load(set())
    assert none is not None and all(u.lora_signals is None for u in none.updates)
    assert cache.load({Signal.CLASS_COV}) is None  # not collected: the run must train round 1 itself
    # a miss collects what it needs plus what the file already held, so it keeps serving earlier readers
    assert cache.signals_to_collect({Signal.CLASS_COV}, extra=()) == {Signal.CLASS_COV, Signal.LORA_SIGNAL}


def test_local_sweep_shares_round1_and_matches_unshared_runs(tmp_path, tiny_spec_values, monkeypatch):
    import livar_bench.client.phase as fed
    from livar_bench.experiments.executors import LocalExecutor

    calls: list[int] = []
    real = fed.local_train

    def counting(*args, **kwargs):
        calls.append(kwargs.get("client_id", -1))
        return real(*args, **kwargs)

    monkeypatch.setattr(fed, "local_train", counting)
    specs = [make_spec({**tiny_spec_values, "method": m}) for m in ("fedavg", "livar", "livar+ccvr")]
    LocalExecutor().run(specs, tmp_path / "sweep")
    k, rounds = tiny_spec_values["num_clients"], tiny_spec_values["rounds"]
    # round 1 trained once for the cell, later rounds once per method
    assert len(calls) == k + len(specs) * k * (rounds - 1)
    assert not list((tmp_path / "sweep" / "cache" / "round1").glob("*.pt"))  # released after the cell's last run
    calls.clear()
    plain = LocalExecutor(share_round1=False).run(specs, tmp_path / "plain")
    assert len(calls) == len(specs) * k * rounds
    assert not (tmp_path / "plain" / "cache").exists()
    for outcome in plain.outcomes:
        shared = tmp_path / "sweep" / "runs" / outcome.run_id
        pd.testing.assert_frame_equal(_metrics(outcome), _metrics(type(outcome)(outcome.run_id, shared, {})))


def _cost(outcome, round_: int = 1) -> dict[str, float]:
    frame = pd.read_csv(outcome.run_dir / "metrics.csv")
    rows = frame[(frame["split"] == "cost") & (frame["round"] == round_)]
    return dict(zip(rows["metric"], rows["value"], strict=True))


def test_reused_round1_reports_the_cost_of_computing_it(tmp_path, tiny_spec_values, monkeypatch):
    import types

    import livar_bench.client.phase as fed
    import livar_bench.federation.local_engine as engine_module
    import livar_bench.federation.loop as loop_module

    clock = [0.0]  # a fake clock: each client's local training takes exactly 1 s, nothing else any time
    real = fed.local_train

    def timed(*args, **kwargs):
        clock[0] += 1.0
        return real(*args, **kwargs)

    fake_time = types.SimpleNamespace(perf_counter=lambda: clock[0])
    monkeypatch.setattr(fed, "local_train", timed)
    monkeypatch.setattr(engine_module, "time", fake_time)
    monkeypatch.setattr(loop_module, "time", fake_time)
    base = make_spec(tiny_spec_values)
    first = run_federation(base, tmp_path, share_round1=True)
    reused = run_federation(base.replace(method="livar"), tmp_path, share_round1=True)
    computed, copied = _cost(first), _cost(reused)
    k = tiny_spec_values["num_clients"]
    assert computed["train_s"] == k * 1.0  # the computing run measured its own training
    assert _cost(reused, round_=2)["train_s"] == k * 1.0  # a later round of the reusing run trained itself
    assert computed["round1_shared"] == 0 and copied["round1_shared"] == 1
    # the reusing run read the file in no (fake) time, but reports what round 1 cost to compute
    assert copied["train_s"] == computed["train_s"]
    assert copied["train_images_per_s"] == computed["train_images_per_s"]
    import json

    images = sum(json.loads((first.run_dir / "partition.json").read_text())["sizes"])  # one epoch, all clients
    assert copied["train_images_per_s"] == pytest.approx(images / computed["train_s"])
    assert copied["wall_s"] >= copied["train_s"]
    # later rounds are each run's own work, with no marker
    assert "round1_shared" not in _cost(reused, 2) and _cost(reused, 2)["train_s"] >= 0.15 * k


def test_cache_file_without_a_training_time_is_recomputed(tmp_path, tiny_spec_values):
    base = make_spec(tiny_spec_values)
    run_federation(base, tmp_path, share_round1=True)
    from livar_bench.store import load_tensors, save_tensors

    [path] = (tmp_path / "cache" / "round1").glob("*.pt")
    state = load_tensors(path)
    del state["train_s"]  # as written before the time was stored
    save_tensors(path, state)
    method = parse_method("fedavg")
    cache = Round1Cache.for_run(tmp_path, base, method, torch.device("cpu"))
    assert cache.load(()) is None
    again = run_federation(base.replace(method="livar"), tmp_path, share_round1=True)
    assert _cost(again)["round1_shared"] == 0  # trained round 1 itself
    assert load_tensors(path)["train_s"] > 0
