"""The issue-21 baselines through ``--engine flower`` (Flower's simulation engine): the same metrics as the
local engine (|difference| <= 1e-6) and the same byte counts, statistics uploads (RegMean's Gram matrices,
Fisher estimates) and mixed client ranks included. Slow: run by .ci/run with the other Flower tests."""

from __future__ import annotations

import pandas as pd
import pytest

from livar_bench.config import make_spec
from livar_bench.federation import run_federation
from livar_bench.store import RunStore

pytest.importorskip("flwr")
pytest.importorskip("ray")
from livar_bench.flower.engine import Simulation  # noqa: E402

pytestmark = pytest.mark.slow
VALUES = dict(dataset="digits", backbone="livar_micro_vit", num_clients=3, rounds=2, local_epochs=1, batch_size=32,
              lr=3e-3, alpha=0.5, lora_rank=2, lora_alpha=2.0, device="cpu", seed=0, max_train_samples=120,
              max_test_samples=60)
# The methods whose paths differ from those the other Flower tests cover: mixed ranks, seeded server draws,
# the two statistics uploads. (All ten issue-21 methods passed this test when it was written, 660 s in all;
# CI keeps these five to stay inside its time budget.)
CASES = [("flexlora", (1, 2)), ("hetlora", (1, 2)), ("dare_ties", None), ("regmean", None), ("fisher_merging", None),
         ("scaffold", None), ("rolora", None)]  # per-client control variates and inputs; alternating frozen factors


def _frame(out, spec) -> pd.DataFrame:
    return pd.read_csv(RunStore(out).run_dir(spec.run_id) / "metrics.csv")


@pytest.mark.parametrize(("method", "ranks"), CASES)
def test_flower_engine_matches_the_local_engine(method, ranks, tmp_path) -> None:
    spec = make_spec({**VALUES, "method": method, **({"client_ranks": ranks} if ranks else {})})
    run_federation(spec, tmp_path / "local")
    run_federation(spec, tmp_path / "flower", launcher=Simulation())
    local, flower = _frame(tmp_path / "local", spec), _frame(tmp_path / "flower", spec)
    learn = lambda f: f[f["split"].isin(["test", "train"])].set_index(["round", "split", "metric"])["value"]  # noqa: E731
    a, b = learn(local).sort_index(), learn(flower).sort_index()
    assert list(a.index) == list(b.index) and (a - b).abs().max() <= 1e-6
    cost = lambda f, m: f[(f["split"] == "cost") & (f["metric"] == m)].sort_values("round")["value"].tolist()  # noqa: E731
    for name in ("upload_bytes_per_client", "upload_signal_bytes_per_client", "download_bytes_per_client"):
        assert cost(local, name) == cost(flower, name), name
