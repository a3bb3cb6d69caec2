"""``--engine flower`` end to end through Flower's simulation engine (Ray): slow, run by .ci/run.

- Equivalence: with the same seed on CPU, the Flower engine gives the local engine's metrics
  (|difference| <= 1e-6 on every test and train metric; in practice identical) for fedavg, livar,
  livar+ccvr, a stateful method (fedadam) and the methods that use the other hooks of the contract
  (fedex_lora, fedsa_lora, ffa_lora, the paper CCVR's class-statistics pass), and flora with mixed
  client ranks and per-client evaluation (--eval-local).
- Bytes on the wire: each round's serialised instruction and reply sizes are at least the cost columns'
  counts and exceed them by at most the per-entry and per-message bounds of codec.py.
- Faults: a client that raises in round 2 is dropped from that round (clients_replied 3 of 4), and the
  result equals the method's server step over the three other clients' updates; a round where no client
  replies stops the run with one message, keeping round 1's checkpoint, from which a rerun resumes.
"""

from __future__ import annotations

import pandas as pd
import pytest

from livar_bench.client.phase import train_clients
from livar_bench.client.train import evaluate
from livar_bench.config import make_spec
from livar_bench.errors import BenchError
from livar_bench.federation import run_federation, setup_run
from livar_bench.federation.kernel import local_settings, round_context
from livar_bench.seeding import STREAM_INIT, generator
from livar_bench.store import RunStore, load_checkpoint
from livar_bench.types import Signal, needs_class_stats

pytest.importorskip("flwr")
pytest.importorskip("ray")
from livar_bench.flower import codec  # noqa: E402
from livar_bench.flower.clientapp import FAIL_ENV  # noqa: E402
from livar_bench.flower.engine import Simulation  # noqa: E402

pytestmark = pytest.mark.slow
TOL = 1e-6
VALUES = dict(dataset="digits", backbone="livar_micro_vit", num_clients=4, rounds=2, local_epochs=1, batch_size=32,
              lr=3e-3, alpha=0.5, lora_rank=2, lora_alpha=2.0, device="cpu", seed=0, max_train_samples=160,
              max_test_samples=80)


def _metrics(out, spec) -> pd.DataFrame:
    return pd.read_csv(RunStore(out).run_dir(spec.run_id) / "metrics.csv")


def _learning(frame: pd.DataFrame) -> pd.Series:
    keep = frame[frame["split"].isin(["test", "train"])].sort_values(["round", "split", "metric"])
    return keep.set_index(["round", "split", "metric"])["value"]


def _cost(frame: pd.DataFrame, metric: str) -> list[float]:
    rows = frame[(frame["split"] == "cost") & (frame["metric"] == metric)].sort_values("round")
    return rows["value"].tolist()


# fedadam: server state; fedex_lora: dense base-weight corrections (downloaded); fedsa_lora: personalised
# client starts; ffa_lora: keys clients keep frozen.
# livar+ccvr[preset=paper]: the extra class-statistics pass over the global model (an EVALUATE message).
@pytest.mark.parametrize("method", ["fedavg", "livar", "livar+ccvr", "fedadam", "fedex_lora", "fedsa_lora",
                                    "ffa_lora", "livar+ccvr[preset=paper]"])
def test_flower_engine_gives_the_local_metrics_and_wire_bytes_match_the_costs(method, tmp_path):
    spec = make_spec({**VALUES, "method": method})
    run_federation(spec, tmp_path / "local")
    run_federation(spec, tmp_path / "flower", launcher=Simulation())
    local, flower = _metrics(tmp_path / "local", spec), _metrics(tmp_path / "flower", spec)
    a, b = _learning(local), _learning(flower)
    assert list(a.index) == list(b.index)
    assert (a - b).abs().max() <= TOL, pd.DataFrame({"local": a, "flower": b})
    for name in ("upload_bytes_per_client", "download_bytes_per_client", "clients_replied"):
        assert _cost(local, name) == _cost(flower, name), name
    assert _cost(flower, "clients_replied") == [4.0, 4.0]
    if "paper" in method:  # the class-statistics pass ran, through Flower, in the last round
        assert len(_cost(flower, "global_stats_s")) == 1 and len(_cost(local, "global_stats_s")) == 1

    # Wire sizes vs counted bytes: entries per message from the model's tensors and the method's signals.
    s = setup_run(spec)
    params = len(s.model.trainable)
    requires = spec.method_spec.build().requires
    lora = sum(".lora_" in k for k in s.model.trainable)
    # LoRA signal: one scalar per factor; class statistics: 5 tensors, 6 with covariances.
    signal_entries = (lora if Signal.LORA_SIGNAL in requires else 0) + (
        (5 + (Signal.CLASS_COV in requires)) if needs_class_stats(requires) else 0)
    deltas = lora // 2 if method == "fedex_lora" else 0  # one [out, in] correction per LoRA module
    # The paper's CCVR adds, in its last round, one more message each way: the global model down, the
    # client's class statistics with covariances (6 tensors) up.
    passes = {r: 2 if "paper" in method and r == spec.rounds else 1 for r in range(1, spec.rounds + 1)}
    for kind, entries in (("upload", params + 1 + signal_entries), ("download", params + deltas)):
        counted, wire = _cost(flower, f"{kind}_bytes_per_client"), _cost(flower, f"wire_{kind}_bytes_per_client")
        for round_, (c, w) in enumerate(zip(counted, wire, strict=True), start=1):
            n = passes[round_]
            extra = (6 if kind == "upload" else params) * (n - 1)
            bound = c + (entries + extra) * codec.ENTRY_OVERHEAD_BOUND + n * codec.RECORD_OVERHEAD_BOUND
            assert c <= w <= bound, (kind, round_, c, w)
    env = (RunStore(tmp_path / "flower").run_dir(spec.run_id) / "env.json").read_text()
    assert '"engine": "flower"' in env


def test_flower_engine_with_mixed_client_ranks_and_local_evaluation(tmp_path):
    # flora mixes ranks; clients of rank 1 and 2 train at their own LoRA scale, and --eval-local adds the
    # per-client split test_local, evaluated on the server from the clients' updates.
    spec = make_spec({**VALUES, "method": "flora", "lora_rank": 2, "client_ranks": (1, 2), "eval_local": True})
    run_federation(spec, tmp_path / "local")
    run_federation(spec, tmp_path / "flower", launcher=Simulation())
    local, flower = _metrics(tmp_path / "local", spec), _metrics(tmp_path / "flower", spec)
    keep = ["test", "train", "test_local"]
    a = local[local["split"].isin(keep)].set_index(["round", "split", "metric"])["value"].sort_index()
    b = flower[flower["split"].isin(keep)].set_index(["round", "split", "metric"])["value"].sort_index()
    assert "test_local" in set(a.index.get_level_values("split"))
    assert list(a.index) == list(b.index)
    assert (a - b).abs().max() <= TOL, pd.DataFrame({"local": a, "flower": b})


def _expected_with_dropout(spec, dropped: dict[int, set[int]]) -> dict[str, float]:
    """The run recomputed from the shared pieces: round r aggregates every client but ``dropped[r]``."""
    s = setup_run(spec)
    method = spec.method_spec.build()
    state = method.init_state(s.model.initial_params(generator(spec.seed, STREAM_INIT)))
    for round_ in range(1, spec.rounds + 1):
        clients = [k for k in range(spec.num_clients) if k not in dropped.get(round_, set())]
        results = train_clients(s.model, state.params, {k: s.clients[k] for k in clients}, s.train_tf,
                                method.objective, local_settings(s), seed=spec.seed, round_=round_,
                                num_classes=s.bundle.num_classes, requires=method.requires)
        state = method.server_step(state, [results[k].update for k in clients], round_context(s, round_, None))
    return evaluate(s.model, state.params, s.test, s.eval_tf, spec.eval_batch_size, s.dtype)


def test_a_client_failing_in_round_2_is_dropped_from_that_round(tmp_path, monkeypatch):
    spec = make_spec({**VALUES, "method": "livar+ccvr"})
    monkeypatch.setenv(FAIL_ENV, "2:2")
    run_federation(spec, tmp_path, launcher=Simulation())
    frame = _metrics(tmp_path, spec)
    assert _cost(frame, "clients_replied") == [4.0, 3.0]
    assert _cost(frame, "clients_failed") == [0.0, 1.0]
    expected = _expected_with_dropout(spec, {2: {2}})
    final = frame[(frame["split"] == "test") & (frame["round"] == 2)].set_index("metric")["value"]
    for name, value in expected.items():
        assert abs(final[name] - value) <= TOL, (name, final[name], value)
    # ... and differs from the 4-client result, so the test can tell the two apart.
    full = _expected_with_dropout(spec, {})
    assert any(abs(full[k] - expected[k]) > TOL for k in expected)


def test_a_round_without_replies_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    spec = make_spec({**VALUES, "method": "fedavg"})
    monkeypatch.setenv(FAIL_ENV, "2:0,2:1,2:2,2:3")
    with pytest.raises(BenchError, match=r"round 2: none of the 4 clients asked replied \(client 0 failed in "
                       r"round 2 .*checkpoint of round 1") as err:
        run_federation(spec, tmp_path, launcher=Simulation())
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)  # one clean line for the CLI
    store = RunStore(tmp_path)
    checkpoint = store.partial_dir(spec.run_id) / "checkpoint.pt"
    assert load_checkpoint(checkpoint)["round"] == 1
    assert not store.is_done(spec.run_id)
    # The rerun resumes from round 1 (here with the local engine: both write the same checkpoints).
    monkeypatch.delenv(FAIL_ENV)
    events = []
    run_federation(spec, tmp_path, on_event=lambda kind, **kw: events.append((kind, kw.get("round"))))
    assert ("resume", 1) in events
    run_federation(spec, tmp_path / "fresh")
    assert (_learning(_metrics(tmp_path, spec)) - _learning(_metrics(tmp_path / "fresh", spec))).abs().max() <= TOL


def test_flower_engine_with_stragglers_and_dropouts_gives_the_local_rows(tmp_path):
    """System heterogeneity through Flower: only the clients that will reply are asked, each with its own
    number of local steps; the rows (who replied, steps taken, learning metrics) equal the local engine's."""
    spec = make_spec({**VALUES, "method": "fednova", "rounds": 3, "local_work": "epochs[min=1,max=3]",
                      "stragglers": 0.5, "dropout": 0.3})
    run_federation(spec, tmp_path / "local")
    run_federation(spec, tmp_path / "flower", launcher=Simulation())
    local, flower = _metrics(tmp_path / "local", spec), _metrics(tmp_path / "flower", spec)
    a, b = _learning(local), _learning(flower)
    assert list(a.index) == list(b.index) and (a - b).abs().max() <= TOL

    def clients(frame):
        rows = frame[frame["split"] == "clients"].sort_values(["round", "client", "metric"])
        return rows[["round", "client", "metric", "value"]].reset_index(drop=True)

    pd.testing.assert_frame_equal(clients(local), clients(flower))
    for name in ("clients_sampled", "clients_replied", "clients_dropped", "local_steps"):
        assert _cost(local, name) == _cost(flower, name), name
    assert sum(_cost(flower, "clients_dropped")) > 0 and clients(flower)["metric"].eq("straggler").any()
