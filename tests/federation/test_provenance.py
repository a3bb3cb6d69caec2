"""Partition provenance: saved once per partition id, reused and verified; heterogeneity on every row."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from livar_bench.config import make_spec
from livar_bench.data.partition import carve_validation, partition_record
from livar_bench.errors import BenchError
from livar_bench.federation import run_federation
from livar_bench.federation.partitions import make_partition, obtain_partition
from livar_bench.reporting.stats import paired_differences

LABELS = np.repeat(np.arange(5), 20)  # 100 samples, 5 classes


def spec(**changes):
    base = dict(dataset="synthetic", backbone="livar_micro_vit", num_clients=4, alpha=0.3, seed=3, device="cpu")
    return make_spec({**base, **changes})


def test_saved_once_and_reused(tmp_path) -> None:
    s = spec()
    part, val = obtain_partition(s, LABELS, 5, tmp_path)
    assert val is None
    record = json.loads((tmp_path / f"{s.partition_id}.json").read_text())
    assert record["fingerprint"] == part.fingerprint() == make_partition(s, LABELS).fingerprint()
    assert [len(c["indices"]) for c in record["clients"]] == part.sizes().tolist()
    assert np.array_equal(np.asarray([c["class_counts"] for c in record["clients"]]), part.class_counts(LABELS, 5))
    assert record["settings"]["alpha"] == 0.3

    # The saved file is authoritative: a later run reuses what it holds, not a fresh draw.
    other = make_partition(spec(seed=4), LABELS)
    (tmp_path / f"{s.partition_id}.json").write_text(json.dumps(partition_record(other, LABELS, 5)))
    reused, _ = obtain_partition(s, LABELS, 5, tmp_path)
    assert reused.fingerprint() == other.fingerprint() != part.fingerprint()


def test_damaged_file_is_set_aside_and_redrawn(tmp_path, capsys) -> None:
    s = spec()
    first, _ = obtain_partition(s, LABELS, 5, tmp_path)
    path = tmp_path / f"{s.partition_id}.json"
    record = json.loads(path.read_text())
    a, b = record["clients"][0]["indices"], record["clients"][1]["indices"]
    a[0], b[0] = b[0], a[0]  # move samples between clients; fingerprint now stale
    path.write_text(json.dumps(record))
    again, _ = obtain_partition(s, LABELS, 5, tmp_path)
    assert again.fingerprint() == first.fingerprint()  # redrawn from the seed, not the damaged indices
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("warning:") and "do not match its fingerprint" in warning and "\n" not in warning
    assert path.with_name(path.name + ".damaged").is_file() and json.loads(path.read_text()) != record


def test_file_from_other_dataset_is_refused(tmp_path) -> None:
    s = spec()
    obtain_partition(s, LABELS, 5, tmp_path)
    with pytest.raises(BenchError, match="samples"):
        obtain_partition(s, LABELS[:90], 5, tmp_path)
    relabelled = LABELS[::-1].copy()  # same size, different labels
    with pytest.raises(BenchError, match="class counts"):
        obtain_partition(s, relabelled, 5, tmp_path)


def test_validation_carve_is_per_client_disjoint_and_seeded(tmp_path) -> None:
    s = spec(val_fraction=0.25)
    assert s.partition_id != spec().partition_id and s.run_id != spec().run_id
    assert spec(val_fraction=0.0).run_id == spec().run_id  # old run ids stay valid
    part, val = obtain_partition(s, LABELS, 5, tmp_path)
    again, val_again = obtain_partition(s, LABELS, 5, None)  # no file: drawn again from the seed
    assert val.fingerprint() == val_again.fingerprint() and part.fingerprint() == again.fingerprint()
    # Same client partition as without validation: the carve does not change the label skew.
    assert part.fingerprint() == make_partition(spec(), LABELS).fingerprint()
    for ix, v in zip(part.client_indices, val.client_indices, strict=True):
        assert set(v) <= set(ix) and len(v) == int(np.floor(0.25 * len(ix)))


def test_carve_keeps_one_training_sample() -> None:
    part = make_partition(spec(), LABELS)
    rngs = [np.random.default_rng(k) for k in range(4)]
    train, val = carve_validation(part, 0.99, rngs)
    assert (train.sizes() >= 1).all()
    assert (train.sizes() + val.sizes() == part.sizes()).all()


@pytest.fixture(scope="module")
def two_partitions(tmp_path_factory):
    """One run with 3 clients and one with 4 clients in the same (dataset, alpha, seed) cell."""
    out = tmp_path_factory.mktemp("prov")
    common = dict(dataset="synthetic", backbone="livar_micro_vit", rounds=1, local_epochs=1, batch_size=32,
                  lr=3e-3, alpha=0.5, lora_rank=2, lora_alpha=2.0, device="cpu", seed=0, max_train_samples=200,
                  max_test_samples=60)
    a = run_federation(make_spec({**common, "num_clients": 3}), out)
    b = run_federation(make_spec({**common, "num_clients": 4, "lr": 1e-3}), out)
    return out, a, b


def test_rows_carry_partition_and_measured_heterogeneity(two_partitions) -> None:
    _, a, _ = two_partitions
    frame = pd.read_csv(a.run_dir / "metrics.csv")
    summary = json.loads((a.run_dir / "partition.json").read_text())
    cols = list(frame.columns)
    assert cols[cols.index("alpha") + 1 : cols.index("alpha") + 3] == ["tv_distance", "class_coverage"]
    assert np.allclose(frame["tv_distance"], summary["tv_distance"])
    assert np.allclose(frame["class_coverage"], summary["class_coverage"])
    assert (frame["partition_id"] == summary["partition_id"]).all()
    saved = json.loads((a.run_dir.parent.parent / "partitions" / f"{summary['partition_id']}.json").read_text())
    assert saved["fingerprint"] == summary["fingerprint"]


def test_cost_rows_present(two_partitions) -> None:
    _, a, _ = two_partitions
    frame = pd.read_csv(a.run_dir / "metrics.csv")
    cost = frame[frame["split"] == "cost"].set_index("metric")["value"]
    for name in ("upload_bytes_per_client", "download_bytes_per_client", "wall_s", "train_s"):
        assert name in cost.index
    assert "peak_host_rss_bytes" in cost.index or "peak_cuda_mem_bytes" in cost.index
    # FedAvg uploads its trainable tensors, the sample count and the class histogram, nothing else.
    assert cost["upload_bytes_per_client"] == cost["download_bytes_per_client"] + 8 + 10 * 8


def test_pooling_two_partition_settings_is_refused(two_partitions) -> None:
    _, a, b = two_partitions
    frame = pd.concat([pd.read_csv(a.run_dir / "metrics.csv"), pd.read_csv(b.run_dir / "metrics.csv")])
    frame.loc[frame["run_id"] == b.run_id, "method"] = "other"  # as if a second method had run
    with pytest.raises(BenchError, match="num_clients"):
        paired_differences(frame, baseline="fedavg")
