"""System heterogeneity plans: who does how much local work and who replies, drawn from the seed alone."""

from __future__ import annotations

import numpy as np
import pytest

from livar_bench.client.system import SystemSettings, parse_work, plan_round, render_work, speed
from livar_bench.config import make_spec
from livar_bench.errors import BenchError

SIZES = {k: 20 + 7 * k for k in range(40)}  # client -> samples; batch 8 -> ceil(n / 8) steps an epoch


def per_epoch(k: int) -> int:
    return -(-SIZES[k] // 8)


def test_fixed_work_is_every_clients_full_epochs_and_everyone_replies():
    plan = plan_round(SystemSettings(), seed=0, round_=1, sizes=SIZES, epochs=2, batch_size=8)
    assert all(p.steps == p.full == 2 * per_epoch(k) and p.replies and not p.straggler for k, p in plan.items())


def test_epoch_and_step_draws_stay_in_their_range_and_vary():
    plan = plan_round(SystemSettings(local_work="epochs[min=1,max=3]"), 0, 1, SIZES, 2, 8)
    epochs = [p.full // per_epoch(k) for k, p in plan.items()]
    assert all(p.full % per_epoch(k) == 0 for k, p in plan.items()) and set(epochs) == {1, 2, 3}
    steps = [p.full for p in plan_round(SystemSettings(local_work="steps[min=4,max=9]"), 0, 1, SIZES, 2, 8).values()]
    assert min(steps) >= 4 and max(steps) <= 9 and len(set(steps)) > 3


def test_stragglers_are_the_asked_fraction_and_do_their_share():
    system = SystemSettings(stragglers=0.25, straggler_work=0.4)
    plan = plan_round(system, 0, 1, SIZES, 3, 8)
    slow = [k for k, p in plan.items() if p.straggler]
    assert len(slow) == 10  # round(0.25 * 40)
    for p in plan.values():
        assert p.steps == (max(1, int(np.floor(0.4 * p.full))) if p.straggler else p.full)
    other_round = {k for k, p in plan_round(system, 0, 2, SIZES, 3, 8).items() if p.straggler}
    assert other_round != set(slow)  # drawn again each round


def test_dropout_rate_and_deadline_by_device_speed():
    plans = [plan_round(SystemSettings(dropout=0.3), 5, r, SIZES, 1, 8) for r in range(1, 51)]
    rate = np.mean([not p.replies for plan in plans for p in plan.values()])
    assert 0.25 < rate < 0.35 and all(p.reason == "dropout" for plan in plans for p in plan.values() if not p.replies)
    deadline = SystemSettings(deadline=6.0)
    for r in (1, 2):
        for k, p in plan_round(deadline, 5, r, SIZES, 1, 8).items():
            assert p.time == pytest.approx(p.steps / speed(5, k))
            assert p.replies == (p.steps / speed(5, k) <= 6.0) and (p.reason == "deadline") == (not p.replies)
    assert speed(5, 3) == speed(5, 3) != speed(6, 3)  # one speed per (seed, client), fixed over rounds


def test_plans_depend_on_the_seed_and_round_only():
    system = SystemSettings(local_work="epochs[min=1,max=4]", stragglers=0.5, dropout=0.2)
    a = plan_round(system, 1, 3, SIZES, 2, 8)
    assert a == plan_round(system, 1, 3, SIZES, 2, 8)
    assert a != plan_round(system, 2, 3, SIZES, 2, 8)
    # a client's own draws do not depend on which other clients were sampled
    some = {k: SIZES[k] for k in (2, 5, 9)}
    b = plan_round(SystemSettings(local_work="epochs[min=1,max=4]", dropout=0.2), 1, 3, some, 2, 8)
    full = plan_round(SystemSettings(local_work="epochs[min=1,max=4]", dropout=0.2), 1, 3, SIZES, 2, 8)
    assert all(b[k] == full[k] for k in some)


def test_specs_are_canonical_and_bad_ones_refused():
    assert render_work(parse_work(" Epochs[ max=5 , min=1 ] ")) == "epochs"
    assert make_spec({"local_work": "steps[min=3,max=20]"}).local_work == "steps[max=20,min=3]"
    for text, message in [("often", "unknown local work"), ("epochs[min=0]", "greater than or equal to 1"),
                          ("steps[min=9,max=2]", "at least min"), ("fixed[k=1]", "k")]:
        with pytest.raises(BenchError, match=message):
            parse_work(text)


def test_defaults_keep_run_ids_and_every_setting_changes_them():
    base = make_spec({})
    assert base.run_id == "14f687d1809f"  # pinned in tests/test_run_id_pins.py
    assert make_spec({"straggler_work": 0.3}).run_id == base.run_id  # no stragglers: no effect
    changed = [{"local_work": "epochs[min=1,max=3]"}, {"stragglers": 0.2}, {"stragglers": 0.2, "straggler_work": 0.3},
               {"dropout": 0.1}, {"deadline": 40.0}]
    ids = {make_spec(c).run_id for c in changed}
    assert len(ids) == len(changed) and base.run_id not in ids
