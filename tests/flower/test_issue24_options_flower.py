"""Issue 24's new options and fixes through ``--engine flower``: the same metrics as the local engine
(|difference| <= 1e-6) and the same byte counts. Per-client fresh A drawn from server state (FLoRA), the
extra client round with the new base corrections (CCVR after FedEx-LoRA), a local head and late clients
starting from their initial tensors (FedSA-LoRA under partial participation). Slow."""

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
CASES = [("flora[a_init=per_client]", {}), ("fedex_lora+ccvr[features=global]", {}),
         ("fedsa_lora[head=local,first_start=initial]", {"participation": 0.67, "rounds": 3})]


def _frame(out, spec) -> pd.DataFrame:
    return pd.read_csv(RunStore(out).run_dir(spec.run_id) / "metrics.csv")


@pytest.mark.parametrize(("method", "extra"), CASES)
def test_flower_engine_matches_the_local_engine(method, extra, tmp_path) -> None:
    spec = make_spec({**VALUES, "method": method, **extra})
    run_federation(spec, tmp_path / "local")
    run_federation(spec, tmp_path / "flower", launcher=Simulation())
    local, flower = _frame(tmp_path / "local", spec), _frame(tmp_path / "flower", spec)
    learn = lambda f: f[f["split"].isin(["test", "train"])].set_index(["round", "split", "metric"])["value"]  # noqa: E731
    a, b = learn(local).sort_index(), learn(flower).sort_index()
    assert list(a.index) == list(b.index) and (a - b).abs().max() <= 1e-6
    cost = lambda f, m: f[(f["split"] == "cost") & (f["metric"] == m)].sort_values("round")["value"].tolist()  # noqa: E731
    for name in ("upload_bytes_per_client", "upload_signal_bytes_per_client", "download_bytes_per_client"):
        assert cost(local, name) == cost(flower, name), name
