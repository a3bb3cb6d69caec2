"""Run ids: same experiment -> same id; anything that changes results -> a different id."""

from __future__ import annotations

import json

from livar_bench.config import make_spec
from livar_bench.methods.livar_rule import PAPER_RULE


def test_defaults_spelled_out_give_the_same_id():
    assert make_spec({"method": "livar"}).run_id == make_spec({"method": "livar[head_subset=correct]"}).run_id


def test_execution_only_fields_do_not_change_the_id():
    base = make_spec({"method": "fedavg"})
    assert base.run_id == make_spec({"method": "fedavg", "device": "cpu", "eval_batch_size": 7}).run_id
    assert base.run_id != make_spec({"method": "fedavg", "lr": 1e-3}).run_id


def test_editing_a_rule_file_in_place_changes_the_id(tmp_path):
    path = tmp_path / "rule.json"
    PAPER_RULE.save(path)
    before = make_spec({"method": f"livar[rule={path}]"}).run_id
    data = json.loads(path.read_text())
    data["base"] = 0.1
    path.write_text(json.dumps(data))
    after = make_spec({"method": f"livar[rule={path}]"}).run_id
    assert before != after
    # provenance is documentation, not part of the experiment
    data["provenance"] = {"note": "edited"}
    path.write_text(json.dumps(data))
    assert make_spec({"method": f"livar[rule={path}]"}).run_id == after


def test_alpha_does_not_split_iid_runs():
    a = make_spec({"partition": "iid", "alpha": 0.1})
    b = make_spec({"partition": "iid", "alpha": 1.0})
    assert a.run_id == b.run_id and a.partition_id == b.partition_id
    assert make_spec({"alpha": 0.1}).run_id != make_spec({"alpha": 1.0}).run_id


# Ids computed before issue 13 (commit ea8c80e) for the default spec. Issue 13 changed the head
# initialisation of every run (and the CCVR and TIES recipes), so no id may survive: a results folder made
# before must never have its runs skipped as if they were the new experiments.
IDS_BEFORE_ISSUE_13 = {
    "fedavg": "8954564115dc", "fedprox": "c81f5ed56472", "livar": "0fed658e4580",
    "livar[head=false]": "e248d76525a3", "task_arithmetic": "8a22050e2250",
    "task_arithmetic[lam=1.0]": "107fe00522e1", "ties": "f0c5f9aa8cd7", "ccvr": "19276b1d8671",
    "livar+ccvr": "f54d067a8833", "ties+ccvr": "97402e3d232a",
}


def test_every_id_changed_with_the_head_initialisation():
    for method, old in IDS_BEFORE_ISSUE_13.items():
        assert make_spec({"method": method}).run_id != old, method
