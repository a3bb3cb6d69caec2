"""System heterogeneity in whole runs: only the replies reach the method, each with the steps it took; the
tidy rows say who replied and worked how much; a round nobody answers leaves the model as it was; a
FedNova run with stragglers resumes to the same numbers; held-out domains get their own rows."""

from __future__ import annotations

import pandas as pd
import pytest

from livar_bench.client.system import plan_round
from livar_bench.config import make_spec
from livar_bench.federation import run_federation, sample_clients, setup_run
from livar_bench.methods.fedavg import FedAvg
from tests.federation.test_federation import Interrupt

SYSTEM = {"local_work": "epochs[min=1,max=3]", "stragglers": 0.4, "straggler_work": 0.5, "dropout": 0.3}


def _frame(outcome) -> pd.DataFrame:
    return pd.read_csv(outcome.run_dir / "metrics.csv")


def test_only_replies_reach_the_method_with_the_steps_they_took(tmp_path, tiny_spec_values, monkeypatch):
    spec = make_spec({**tiny_spec_values, "num_clients": 5, "rounds": 3, "participation": 0.8, **SYSTEM})
    seen: list[list[tuple[int, int]]] = []
    original = FedAvg.__call__

    def spy(self, global_params, updates, ctx):
        seen.append([(u.client_id, u.num_steps) for u in updates])
        return original(self, global_params, updates, ctx)

    monkeypatch.setattr(FedAvg, "__call__", spy)
    frame = _frame(run_federation(spec, tmp_path))
    s = setup_run(spec)
    expected = []
    for r in range(1, 4):  # the plan, recomputed here from the seed: replies and their budgets
        plan = plan_round(spec.system, spec.seed, r, {k: len(s.clients[k]) for k in sample_clients(spec, r)},
                          spec.local_epochs, spec.batch_size)
        expected.append([(k, p.steps) for k, p in sorted(plan.items()) if p.replies])
        rows = frame[(frame["split"] == "clients") & (frame["round"] == r)]
        replied = rows[rows["metric"] == "replied"].set_index("client")["value"]
        assert replied.to_dict() == {k: float(p.replies) for k, p in plan.items()}
        steps = rows[rows["metric"] == "steps"].set_index("client")["value"]
        assert steps.to_dict() == {k: float(p.steps) for k, p in plan.items() if p.replies}
        cost = frame[(frame["split"] == "cost") & (frame["round"] == r)].set_index("metric")["value"]
        assert cost["clients_sampled"] == 4 and cost["clients_replied"] == len(expected[-1])
        assert cost["clients_dropped"] == 4 - len(expected[-1]) and cost["local_steps"] == steps.sum()
    assert seen == [e for e in expected if e]  # rounds with replies, in order
    assert any(p.straggler for p in plan.values()) or any(frame.query("metric == 'straggler'")["value"] > 0)
    assert len({n for round_ in seen for _, n in round_}) > 2  # work really varied


def test_a_round_nobody_answers_leaves_the_global_model_unchanged(tmp_path, tiny_spec_values):
    spec = make_spec({**tiny_spec_values, "rounds": 2, "dropout": 0.999})
    frame = _frame(run_federation(spec, tmp_path))
    test = frame[(frame["split"] == "test") & (frame["metric"] == "loss")].sort_values("round")["value"].tolist()
    assert test[0] == test[1] == test[2]  # rounds 0, 1, 2
    assert frame[(frame["split"] == "cost") & (frame["metric"] == "clients_replied")]["value"].tolist() == [0.0, 0.0]
    assert frame[(frame["split"] == "train") & (frame["metric"] == "loss")].empty


def test_a_deadline_drops_the_slow_devices(tmp_path, tiny_spec_values):
    spec = make_spec({**tiny_spec_values, "num_clients": 6, "rounds": 1, "deadline": 3.0})
    frame = _frame(run_federation(spec, tmp_path))
    rows = frame[frame["split"] == "clients"].pivot_table(index="client", columns="metric", values="value")
    assert 0 < rows["missed_deadline"].sum() < 6  # some devices are too slow for 3 step-times, not all
    assert (rows["replied"] == 1 - rows["missed_deadline"]).all()


@pytest.mark.parametrize("method", ["fednova", "fednova[gmf=0.5]"])
def test_interrupted_fednova_run_with_stragglers_resumes_to_the_same_numbers(tmp_path, tiny_spec_values, method):
    spec = make_spec({**tiny_spec_values, "rounds": 3, "method": method, "num_clients": 4, **SYSTEM})
    straight = _frame(run_federation(spec, tmp_path / "a"))

    def interrupt_after_round_1(event: str, **info) -> None:
        if event == "round" and info["round"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_federation(spec, tmp_path / "b", on_event=interrupt_after_round_1)
    resumed = _frame(run_federation(spec, tmp_path / "b"))
    keep = ["round", "split", "metric", "client", "value"]
    learn = [s for s in ("test", "train", "clients")]
    a = straight[straight["split"].isin(learn)][keep].reset_index(drop=True)
    b = resumed[resumed["split"].isin(learn)][keep].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_fednova_with_equal_work_matches_fedavg_in_a_run(tmp_path, tiny_spec_values):
    # steps[min=4,max=4]: every client takes exactly 4 steps, so FedNova's normalisation changes nothing
    values = {**tiny_spec_values, "rounds": 2, "local_work": "steps[min=4,max=4]"}
    nova = _frame(run_federation(make_spec({**values, "method": "fednova"}), tmp_path / "n"))
    avg = _frame(run_federation(make_spec({**values, "method": "fedavg"}), tmp_path / "a"))

    def acc(f):
        return f[(f["split"] == "test")].sort_values(["round", "metric"])["value"].to_numpy()

    assert abs(acc(nova) - acc(avg)).max() < 1e-4
