"""The check that ``--engine flower`` gives what the local engine gives, shared by the Flower equivalence tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from livar_bench.config import RunSpec
from livar_bench.federation import run_federation
from livar_bench.store import RunStore

# Small enough for a Ray simulation per case on a CPU; the tests add their method and settings.
VALUES = dict(dataset="digits", backbone="livar_micro_vit", num_clients=3, rounds=2, local_epochs=1, batch_size=32,
              lr=3e-3, alpha=0.5, lora_rank=2, lora_alpha=2.0, device="cpu", seed=0, max_train_samples=120,
              max_test_samples=60)
BYTE_COLUMNS = ("upload_bytes_per_client", "upload_signal_bytes_per_client", "download_bytes_per_client")


def _frame(out: Path, spec: RunSpec) -> pd.DataFrame:
    return pd.read_csv(RunStore(out).run_dir(spec.run_id) / "metrics.csv")


def assert_engines_agree(spec: RunSpec, tmp_path: Path) -> None:
    """Run ``spec`` in both engines: every test/train metric within 1e-6, every byte count equal."""
    from livar_bench.flower.engine import Simulation

    run_federation(spec, tmp_path / "local")
    run_federation(spec, tmp_path / "flower", launcher=Simulation())
    local, flower = _frame(tmp_path / "local", spec), _frame(tmp_path / "flower", spec)

    def learn(f: pd.DataFrame) -> pd.Series:
        return f[f["split"].isin(["test", "train"])].set_index(["round", "split", "metric"])["value"].sort_index()

    def cost(f: pd.DataFrame, metric: str) -> list[float]:
        return f[(f["split"] == "cost") & (f["metric"] == metric)].sort_values("round")["value"].tolist()

    a, b = learn(local), learn(flower)
    assert list(a.index) == list(b.index) and (a - b).abs().max() <= 1e-6
    for name in BYTE_COLUMNS:
        assert cost(local, name) == cost(flower, name), name
