"""Sweep specs: validation, CLI overrides, expansion into RunSpecs, data presence checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livar_bench.errors import BenchError, DataNotFoundError
from livar_bench.experiments import sweep as sw
from livar_bench.experiments.executors import RAY_HOW, get_executor

CONFIGS = Path(__file__).resolve().parents[2] / "livar_bench" / "configs"
BASE = dict(backbone="livar_micro_vit", num_clients=3, rounds=1, local_epochs=1, lora_rank=2, device="cpu")


def test_expand_is_the_cartesian_product_in_loop_order():
    config = sw.parse_sweep({"grid": {"datasets": ["synthetic"], "methods": ["fedavg", "fedprox", "livar"],
                                      "alphas": [0.1, 0.5], "seeds": [0, 1]}, "base": BASE})
    specs = sw.expand(config)
    assert len(specs) == 3 * 2 * 2
    assert len({s.run_id for s in specs}) == 12
    # method innermost, then seed, then alpha
    assert [s.method for s in specs[:3]] == ["fedavg", "fedprox", "livar"]
    assert [(s.alpha, s.seed) for s in specs[::3]] == [(0.1, 0), (0.1, 1), (0.5, 0), (0.5, 1)]
    assert all(s.num_clients == 3 and s.backbone == "livar_micro_vit" for s in specs)


def test_axis_missing_from_grid_comes_from_base():
    config = sw.parse_sweep({"grid": {"methods": ["fedavg"], "seeds": [0, 1]}, "base": {**BASE, "alpha": 0.3}})
    assert {s.alpha for s in sw.expand(config)} == {0.3}
    assert {s.dataset for s in sw.expand(config)} == {"digits"}  # RunSpec default


def test_equivalent_method_specs_are_one_run():
    config = sw.parse_sweep({"grid": {"methods": ["ccvr", "fedavg+ccvr"]}, "base": BASE})
    specs = sw.expand(config)
    assert [s.method for s in specs] == ["fedavg+ccvr"]  # "ccvr" is "fedavg+ccvr": one run, not two


@pytest.mark.parametrize("data, words", [
    ({"grid": {"optimizers": ["sgd"]}}, "grid.optimizers: unknown setting"),
    ({"grid": {"seeds": []}}, "at least one value"),
    ({"grid": {"seeds": [0, 0]}}, "twice"),
    ({"grid": {"alphas": ["lots"]}}, "grid.alphas"),
    ({"base": {"learning_rate": 0.1}}, "learning_rate"),
    ({"grids": {}}, "grids: unknown setting"),
    ({"grid": {"alphas": [0.1]}, "base": {"alpha": 0.2}}, "alpha set both in grid and in base"),
])
def test_invalid_sweeps_are_one_clear_error(data, words):
    with pytest.raises(BenchError, match=words):
        sw.parse_sweep(data)


def test_invalid_run_values_are_reported_at_expansion():
    config = sw.parse_sweep({"grid": {"alphas": [0.1, -1.0], "methods": ["fedavg"]}})
    with pytest.raises(BenchError, match="alpha"):
        sw.expand(config)
    with pytest.raises(BenchError, match="unknown method"):
        sw.expand(sw.parse_sweep({"grid": {"methods": ["fedawg"]}}))


def test_command_line_overrides_config():
    config = sw.parse_sweep({"grid": {"methods": ["fedavg"], "seeds": [0, 1, 2], "lrs": [0.1, 0.01]},
                             "base": {"rounds": 5, "alpha": 0.2}})
    merged = sw.with_overrides(config, grid={"seeds": [7], "alphas": [0.05, 0.5], "methods": None},
                               base={"rounds": 1, "lr": 0.3, "device": None})
    assert merged.grid.seeds == [7]
    assert merged.grid.methods == ["fedavg"]  # None = not given: the config's list stays
    assert merged.grid.alphas == [0.05, 0.5] and "alpha" not in merged.base  # list replaces a base value
    assert merged.grid.lrs is None and merged.base["lr"] == 0.3  # a single value replaces a grid axis
    assert merged.base["rounds"] == 1
    assert len(sw.expand(merged)) == 2


@given(st.lists(st.sampled_from(["fedavg", "ties[density=0.2,lam=1.0]", "livar+ccvr", "a[b=1]+c[d=2,e=3]"]),
                min_size=1, max_size=5))
def test_split_list_keeps_bracketed_commas(items):
    assert sw.split_list(",".join(items)) == items


def test_parse_numbers_names_the_option():
    assert sw.parse_numbers("0.05, 0.1", float, "alphas") == [0.05, 0.1]
    with pytest.raises(BenchError, match="--seeds"):
        sw.parse_numbers("0,one", int, "seeds")


def test_missing_data_names_every_dataset_before_training(tmp_path):
    (tmp_path / "cifar-100-python").mkdir()
    for name in ("train", "test", "meta"):
        (tmp_path / "cifar-100-python" / name).write_bytes(b"")
    config = sw.parse_sweep({"grid": {"datasets": ["cifar100", "imagenet-r", "eurosat", "digits"], "methods": ["fedavg"]},
                             "base": {"data_root": str(tmp_path)}})
    problems = sw.missing_data(sw.expand(config))
    assert [p.split(":")[0] for p in problems] == ["imagenet-r", "eurosat"]  # cifar100 present, digits offline
    with pytest.raises(DataNotFoundError, match="2 dataset"):
        sw.check_data(sw.expand(config))
    no_root = sw.parse_sweep({"grid": {"datasets": ["cub200"], "methods": ["fedavg"]}})
    with pytest.raises(DataNotFoundError, match="cub200: no --data-root"):
        sw.check_data(sw.expand(no_root))


def test_shipped_configs_validate_and_name_the_real_methods():
    paper = sw.load_sweep(CONFIGS / "paper.yaml")
    assert set(paper.grid.methods) == {"livar", "ccvr", "livar+ccvr", "fedavg", "fedprox", "ties", "task_arithmetic"}
    assert set(paper.grid.datasets) == {"cifar100", "imagenet-r", "eurosat", "cub200"}
    specs = sw.expand(paper)
    assert len(specs) == 4 * 7 * len(paper.grid.alphas) * len(paper.grid.seeds)
    assert all(s.num_clients == 10 and s.rounds == 5 and s.local_epochs == 5 and s.lora_rank == 16 for s in specs)
    assert sw.missing_data(specs)  # no data root configured: every dataset is reported
    demo = sw.expand(sw.load_sweep(CONFIGS / "demo.yaml"))
    assert {s.dataset for s in demo} == {"digits"} and not sw.missing_data(demo)
    for path in CONFIGS.glob("*.yaml"):
        header = "\n".join(path.read_text().splitlines()[:6])
        assert "livar-bench sweep --config" in header, f"{path.name}: its header must say how to run it"


def test_ray_executor_missing_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail as if it were not installed
    with pytest.raises(BenchError, match=r"pip install 'livar-bench\[ray\]'"):
        get_executor("ray")
    assert "pip install 'livar-bench[ray]'" in RAY_HOW
    with pytest.raises(BenchError, match="unknown executor 'pbs'; use --executor local, ray or slurm"):
        get_executor("pbs")


def test_missing_backbone_weights_stop_the_sweep_before_training(tmp_path, monkeypatch):
    from livar_bench.config import make_spec
    from livar_bench.errors import WeightsError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub counts as unreachable: only the local cache could serve
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setattr("livar_bench.models.loading._cached_hub_file", lambda name: None)  # nothing cached
    specs = [make_spec({"dataset": "digits", "backbone": "vit_tiny_patch16_224", "method": "fedavg"})]
    with pytest.raises(WeightsError, match="vit_tiny_patch16_224"):
        sw.check_data(specs)
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(WeightsError, match="does not exist"):
        sw.check_data([specs[0].replace(weights=str(missing))])
    sw.check_data([specs[0].replace(pretrained=False)])  # random init needs no weights
    sw.check_data([make_spec({"dataset": "digits", "backbone": "livar_tiny_vit"})])
