"""``--partition`` end to end: the shorthands keep their ids and partitions, ``livar-bench partition`` prints
and plots a partition that runs then reuse, runs record partition.json and partition.png, domains of an hf:
dataset reach the domain partitioner."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from livar_bench.cli.options import run_settings
from livar_bench.config import make_spec
from tests._cli import invoke

TINY = ["--backbone", "livar_micro_vit", "--clients", "3", "--rounds", "1", "--epochs", "1", "--lora-rank", "2",
        "--lora-alpha", "2", "--device", "cpu"]


def test_shorthands_and_specs_are_the_same_run():
    assert make_spec(run_settings(iid=True)).run_id == make_spec(run_settings(partition="iid")).run_id == "11e8a6ffa55c"
    by_alpha = make_spec({"method": "livar", "alpha": 0.1, "seed": 3, "num_clients": 5})
    by_spec = make_spec({"method": "livar", "partition": "dirichlet[alpha=0.1]", "seed": 3, "num_clients": 5})
    assert by_alpha.run_id == by_spec.run_id == "7c129c9e5986"  # pinned in tests/test_run_id_pins.py
    assert by_spec.partition == "dirichlet" and by_spec.alpha == 0.1 and by_spec.partition_label == "dirichlet[alpha=0.1]"
    # alpha means nothing to a scheme without a Dirichlet: not part of its ids
    shards = [make_spec({"partition": "shards", "alpha": a}) for a in (0.1, 0.5)]
    assert shards[0].run_id == shards[1].run_id and shards[0].partition_id == shards[1].partition_id
    # ... but it is to one that draws from one
    balanced = [make_spec({"partition": "balanced_dirichlet", "alpha": a}) for a in (0.1, 0.5)]
    assert balanced[0].run_id != balanced[1].run_id
    moved = by_alpha.replace(partition="dirichlet[alpha=0.3]")
    assert moved.alpha == 0.3 and moved.run_id == by_alpha.replace(alpha=0.3).run_id


def test_dirichlet_and_iid_partitions_are_the_ones_drawn_before_the_registry():
    from livar_bench.data import load_dataset
    from livar_bench.data.partition import dirichlet_partition, iid_partition
    from livar_bench.federation.partitions import make_partition

    labels = load_dataset("digits").train.labels.numpy()
    # fingerprints computed on main at a8e5d9c, before data/partitioners/ existed
    assert dirichlet_partition(labels, 10, 0.5, np.random.default_rng(0), 6).fingerprint() == "bf86184a10c6"
    assert dirichlet_partition(labels, 5, 0.1, np.random.default_rng(3), 6).fingerprint() == "caa65a2c87de"
    assert dirichlet_partition(labels, 4, 0.05, np.random.default_rng(1), 6).fingerprint() == "4df21b3a2c59"
    assert iid_partition(len(labels), 7, np.random.default_rng(2), 1).fingerprint() == "a9b001d3f49e"
    assert make_partition(make_spec({"dataset": "digits"}), labels).fingerprint() == "d90a3aa27d1d"
    iid = make_spec({"dataset": "digits", "partition": "iid", "num_clients": 4, "seed": 5})
    assert make_partition(iid, labels).fingerprint() == "5b794bf62082"


def test_partition_command_prints_measures_and_a_run_reuses_and_records_it(tmp_path, monkeypatch, capsys):
    from PIL import Image

    out = tmp_path / "results"
    args = ["--dataset", "synthetic", "--partition", "classes[k=2,assign=random]", "--clients", "3", "--seed", "4"]
    code, stdout, err = invoke(["partition", *args, "--out", str(out)], monkeypatch, capsys)
    assert code == 0, err
    spec = make_spec(run_settings(dataset="synthetic", partition="classes[k=2,assign=random]", clients=3, seed=4))
    saved = json.loads((out / "partitions" / f"{spec.partition_id}.json").read_text())
    counts = np.array([c["class_counts"] for c in saved["clients"]])
    assert (counts > 0).sum(1).tolist() == [2, 2, 2]  # two classes each
    assert f"classes_per_client  {2:>10}" in stdout and spec.partition_id in stdout
    assert f"unassigned  {600 - counts.sum():>10}" in stdout.replace("unassigned          ", "unassigned  ")
    plot = out / "partitions" / f"{spec.partition_id}.png"
    assert Image.open(io.BytesIO(plot.read_bytes())).format == "PNG"

    code, _, err = invoke(["run", *args, *TINY[2:], "--backbone", "livar_micro_vit", "--out", str(out)],
                          monkeypatch, capsys)
    assert code == 0, err
    run_dir = next((out / "runs").glob("*/DONE")).parent
    record = json.loads((run_dir / "partition.json").read_text())
    assert record["fingerprint"] == saved["fingerprint"]  # the run trained on the partition the command drew
    assert record["partition"] == "classes[assign=random]" and record["settings"] == {"assign": "random", "k": 2}
    assert record["measures"]["unassigned"] == 600 - counts.sum()
    assert (run_dir / "partition.png").read_bytes() == plot.read_bytes()


def test_plots_differ_with_the_partition_and_repeat_for_the_same_one():
    from livar_bench.data.partitioners.plot import label_distribution_png

    a = np.array([[5, 0], [1, 4]])
    assert label_distribution_png(a, "t") == label_distribution_png(a.copy(), "t")
    assert label_distribution_png(a, "t") != label_distribution_png(a[::-1], "t")


def test_sweep_partitions_axis_lists_one_run_per_partition(tmp_path, monkeypatch, capsys):
    code, stdout, err = invoke(["sweep", "--datasets", "synthetic", "--methods", "fedavg", "--partitions",
                                "iid,shards[per_client=3],dirichlet", "--alphas", "0.1,0.5", *TINY, "--dry-run",
                                "--out", str(tmp_path)], monkeypatch, capsys)
    assert code == 0, err
    listed = [line for line in stdout.splitlines() if "  fedavg  synthetic  " in line]
    # alpha only multiplies the Dirichlet runs: iid and shards ignore it (one run each)
    assert len(listed) == 4 and sum("shards[per_client=3]" in line for line in listed) == 1
    assert sum("alpha=" in line for line in listed) == 2


def test_ls_partitioners_lists_every_scheme_with_its_settings(monkeypatch, capsys):
    from livar_bench.data.partitioners import PARTITIONERS

    code, stdout, _ = invoke(["ls", "partitioners", "--format", "json"], monkeypatch, capsys)
    rows = json.loads(stdout)
    assert code == 0 and [r["name"] for r in rows] == list(PARTITIONERS)
    assert "per_client=2: Shards dealt to each client" in next(r for r in rows if r["name"] == "shards")[
        "settings (default: help)"]


def test_domains_of_an_hf_dataset_reach_the_domain_partitioner(tmp_path, monkeypatch, capsys):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    rng = np.random.default_rng(0)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"]),
                                  "domain": datasets.Value("string")})

    def split(n):
        return datasets.Dataset.from_dict(
            {"img": [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(n)],
             "label": [i % 2 for i in range(n)], "domain": [["sketch", "art", "toy"][i % 3] for i in range(n)]},
            features=features)

    datasets.DatasetDict({"train": split(30), "test": split(6)}).save_to_disk(str(tmp_path / "ds"))
    out = tmp_path / "results"
    code, stdout, err = invoke(["partition", "--dataset", f"hf:{tmp_path / 'ds'}", "--partition", "domain",
                                "--clients", "3", "--min-client-samples", "2", "--cache-dir", str(tmp_path / "c"),
                                "--out", str(out)], monkeypatch, capsys)
    assert code == 0, err
    assert "domains_per_client           1" in stdout and "domain_tv_distance" in stdout
    spec = make_spec(run_settings(dataset=f"hf:{tmp_path / 'ds'}", partition="domain", clients=3,
                                  min_client_samples=2))
    saved = json.loads((out / "partitions" / f"{spec.partition_id}.json").read_text())
    # domain names sorted: art (i % 3 == 1), sketch (0), toy (2): client k holds one whole domain
    assert [c["indices"] for c in saved["clients"]] == [list(range(1, 30, 3)), list(range(0, 30, 3)),
                                                        list(range(2, 30, 3))]
