"""Same run twice on CPU -> identical metrics; two methods of one cell share partition, init and data order."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from livar_bench.config import make_spec
from livar_bench.federation import run_federation

COMMON = dict(dataset="synthetic", backbone="livar_micro_vit", num_clients=3, rounds=2, local_epochs=1,
              batch_size=32, lr=3e-3, alpha=0.5, lora_rank=2, lora_alpha=2.0, device="cpu", seed=7,
              max_train_samples=240, max_test_samples=80, val_fraction=0.2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """livar in two separate results folders, and fedavg beside the first."""
    first, second = tmp_path_factory.mktemp("det_a"), tmp_path_factory.mktemp("det_b")
    livar = make_spec({**COMMON, "method": "livar"})
    fedavg = make_spec({**COMMON, "method": "fedavg"})
    return (run_federation(livar, first), run_federation(livar, second), run_federation(fedavg, first))


def science(run_dir) -> pd.DataFrame:
    """Every metric row except the timing/memory/communication ones."""
    frame = pd.read_csv(run_dir / "metrics.csv")
    return frame[frame["split"] != "cost"].reset_index(drop=True)


def test_same_run_twice_is_identical(runs) -> None:
    a, b, _ = runs
    assert a.run_dir != b.run_dir
    left, right = science(a.run_dir), science(b.run_dir)
    assert set(left["split"]) == {"test", "train", "val"}
    pd.testing.assert_frame_equal(left, right, check_exact=True)


def test_methods_share_partition_init_and_order(runs) -> None:
    livar, _, fedavg = runs
    p_livar = json.loads((livar.run_dir / "partition.json").read_text())
    p_fedavg = json.loads((fedavg.run_dir / "partition.json").read_text())
    assert p_livar["fingerprint"] == p_fedavg["fingerprint"]
    assert p_livar["partition_id"] == p_fedavg["partition_id"]
    # Round 0 evaluates the initial LoRA/head weights before any training: equal iff init is shared.
    l0, f0 = science(livar.run_dir), science(fedavg.run_dir)
    r0 = ["split", "metric", "value"]
    pd.testing.assert_frame_equal(l0[l0["round"] == 0][r0].reset_index(drop=True),
                                  f0[f0["round"] == 0][r0].reset_index(drop=True), check_exact=True)
    # Round-1 client training starts from the same weights on the same data in the same order, and
    # FedAvg's and LIVAR's clients use the same objective, so the mean local loss of round 1 matches.
    loss1 = [f[(f["round"] == 1) & (f["split"] == "train") & (f["metric"] == "loss")]["value"].item() for f in (l0, f0)]
    assert loss1[0] == loss1[1]
