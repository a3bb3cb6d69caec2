"""Sweep specs: a grid of lists plus base run settings, expanded into validated ``RunSpec`` objects.

A sweep YAML file has two sections (unknown keys anywhere are errors)::

    grid:                      # every combination of these lists is one run
      datasets: [cifar100, imagenet-r]
      methods: [livar, ccvr, livar+ccvr]
      alphas: [0.05, 0.1, 0.2]
      seeds: [0, 1, 2]
    base:                      # any RunSpec setting (see `livar-bench run --help`), shared by all runs
      backbone: vit_base_patch16_224.augreg_in21k
      rounds: 5

An axis missing from ``grid`` takes its single value from ``base`` (or the RunSpec default). Setting
one field both as a grid axis and in ``base`` is an error, because which one wins would be a guess.
Command-line options are applied on top: list options replace grid axes, run options replace base
settings.

Runs are ordered dataset, alpha, seed, method so that the methods compared on one partition finish
close together, and deduplicated by run id (``ccvr`` and ``fedavg+ccvr`` may be the same run).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from livar_bench.config import RunSpec, format_validation_error, load_yaml, make_spec
from livar_bench.digest import json_digest
from livar_bench.errors import BenchError, DataNotFoundError, WeightsError

# grid axis name -> RunSpec field it sets
AXES: dict[str, str] = {
    "datasets": "dataset",
    "methods": "method",
    "partitions": "partition",
    "alphas": "alpha",
    "seeds": "seed",
    "backbones": "backbone",
    "num_clients": "num_clients",
    "lora_ranks": "lora_rank",
    "lrs": "lr",
}
# order of the nested loops, outermost first (method innermost: a partition's methods run back to back)
LOOP_ORDER = ("datasets", "backbones", "num_clients", "partitions", "alphas", "lora_ranks", "lrs", "seeds", "methods")


class SweepGrid(BaseModel):
    """Lists whose Cartesian product is the set of runs."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    datasets: list[str] | None = Field(None, description="Dataset names (livar-bench ls datasets).")
    methods: list[str] | None = Field(None, description="Method specs, e.g. livar, livar+ccvr.")
    partitions: list[str] | None = Field(None, description="Partition specs, e.g. iid, shards[per_client=2].")
    alphas: list[float] | None = Field(None, description="Dirichlet concentrations.")
    seeds: list[int] | None = Field(None, description="Seeds (partition, init, data order).")
    backbones: list[str] | None = Field(None, description="Backbone names.")
    num_clients: list[int] | None = Field(None, description="Numbers of clients.")
    lora_ranks: list[int] | None = Field(None, description="LoRA ranks.")
    lrs: list[float] | None = Field(None, description="Local learning rates.")

    @field_validator("*")
    @classmethod
    def _non_empty_unique(cls, value: list | None) -> list | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must list at least one value (or be left out)")
        if len(set(map(str, value))) != len(value):
            raise ValueError(f"lists a value twice: {value}")
        return value

    def axes(self) -> dict[str, list[Any]]:
        """The axes that are set, in loop order."""
        return {name: getattr(self, name) for name in LOOP_ORDER if getattr(self, name) is not None}


class SweepConfig(BaseModel):
    """A sweep: ``grid`` lists and ``base`` run settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, description="Free-form label of the sweep.")
    grid: SweepGrid = Field(default_factory=SweepGrid)
    base: dict[str, Any] = Field(default_factory=dict, description="RunSpec settings shared by every run.")

    @field_validator("base")
    @classmethod
    def _known_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(RunSpec.model_fields))
        if unknown:
            raise ValueError(f"unknown run setting(s) {', '.join(unknown)}; see `livar-bench run --help`")
        return value


def parse_sweep(data: dict[str, Any], source: str = "sweep") -> SweepConfig:
    """Validate a sweep mapping (as read from YAML) into a ``SweepConfig``."""
    try:
        config = SweepConfig(**data)
    except ValidationError as err:
        raise BenchError(f"invalid {source}: {format_validation_error(err)}") from None
    clash = sorted(AXES[a] for a in config.grid.axes() if AXES[a] in config.base)
    if clash:
        raise BenchError(f"invalid {source}: {', '.join(clash)} set both in grid and in base; keep one")
    return config


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and validate a sweep YAML file."""
    return parse_sweep(load_yaml(path), source=f"sweep config {path}")


def with_overrides(
    config: SweepConfig, grid: dict[str, list[Any] | None] | None = None, base: dict[str, Any] | None = None
) -> SweepConfig:
    """A copy with command-line grid lists and base settings applied (``None`` = not given)."""
    axes = {k: v for k, v in config.grid.model_dump().items() if v is not None}
    settings = dict(config.base)
    for name, values in (grid or {}).items():
        if values is not None:
            axes[name] = values
            settings.pop(AXES[name], None)  # the command line's list wins over a base value
    for key, value in (base or {}).items():
        if value is not None:
            settings[key] = value
            for axis, field in AXES.items():
                if field == key:
                    axes.pop(axis, None)  # a single command-line value replaces a grid axis
    return parse_sweep({"name": config.name, "grid": axes, "base": settings}, source="sweep settings")


def expand(config: SweepConfig) -> list[RunSpec]:
    """Every run of the grid as a validated RunSpec, deduplicated by run id, in loop order."""
    axes = config.grid.axes()
    names = list(axes)
    specs: dict[str, RunSpec] = {}
    for combo in itertools.product(*(axes[n] for n in names)):
        values = {**config.base, **{AXES[n]: v for n, v in zip(names, combo, strict=True)}}
        spec = make_spec(values)
        specs.setdefault(spec.run_id, spec)
    return list(specs.values())


def sweep_summary(specs: list[RunSpec]) -> str:
    """One line: how many runs over which datasets, methods, alphas and seeds."""

    def uniq(field: str) -> str:
        return ",".join(dict.fromkeys(str(getattr(s, field)) for s in specs))

    parts = f"partitions {uniq('partition_label')}; " if any(s.partition != "dirichlet" for s in specs) else ""
    return (f"{len(specs)} runs: datasets {uniq('dataset')}; methods {uniq('method')}; {parts}"
            f"alphas {uniq('alpha')}; seeds {uniq('seed')}")


# --- data presence ---------------------------------------------------------------------------------

# files each real dataset needs under --data-root (the layouts documented in livar_bench/data/real.py)
REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "cifar100": ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),
    "imagenet-r": ("imagenet-r",),
    "domainnet": ("domainnet",),
    "domainnet10": ("domainnet",),
    "eurosat": ("eurosat/2750", "eurosat/split_zhou_EuroSAT.json"),
    "cub200": ("CUB_200_2011/images.txt", "CUB_200_2011/image_class_labels.txt",
               "CUB_200_2011/train_test_split.txt", "CUB_200_2011/classes.txt", "CUB_200_2011/images"),
}


def missing_data(specs: list[RunSpec]) -> list[str]:
    """One message per dataset whose files are missing (checked without loading anything)."""
    from livar_bench.data import DATASETS, resolve_name

    problems: dict[str, str] = {}
    for spec in specs:
        name = resolve_name(spec.dataset)
        if name not in DATASETS:  # hf:<source>: its loader reports a missing source itself
            continue
        definition = DATASETS[name]
        if definition.offline or name in problems:
            continue
        if name in ("cifar100", "cifar10") and spec.download:
            continue  # torchvision fetches it on first use
        if not spec.data_root:
            problems[name] = f"{name}: no --data-root given. {definition.how_to_get}"
            continue
        root = Path(spec.data_root).expanduser()
        if name == "cifar10":  # either of two layouts
            from livar_bench.data import LoadOptions, cifar10

            if cifar10.source(LoadOptions(spec.data_root)) is None:
                problems[name] = f"{name}: {root} holds neither {cifar10.PICKLES}/ nor cifar10_jpg.tar.gz. " \
                                 f"{definition.how_to_get}"
            continue
        absent = [rel for rel in REQUIRED_FILES.get(name, ()) if not (root / rel).exists()]
        if absent:
            problems[name] = f"{name}: {root / absent[0]} does not exist. {definition.how_to_get}"
    return list(problems.values())


def missing_weights(specs: list[RunSpec]) -> list[str]:
    """One message per backbone whose weights cannot be had (checked without building a model)."""
    from livar_bench.models.loading import weights_problem

    problems: dict[tuple, str] = {}
    for spec in specs:
        key = (spec.backbone, spec.pretrained, spec.weights)
        if key not in problems:
            problems[key] = weights_problem(spec.backbone, pretrained=spec.pretrained, weights=spec.weights) or ""
    return [p for p in problems.values() if p]


def check_data(specs: list[RunSpec]) -> None:
    """Refuse, before any training, when a dataset's files or a backbone's weights are missing.

    Raises one ``DataNotFoundError`` naming every missing dataset, else one ``WeightsError``.
    """
    problems = missing_data(specs)
    if problems:
        raise DataNotFoundError(
            f"data missing for {len(problems)} dataset(s), nothing was run: " + " | ".join(problems)
        )
    weights = missing_weights(specs)
    if weights:
        raise WeightsError(f"backbone weights missing, nothing was run: {' | '.join(weights)}")


def split_list(text: str | None) -> list[str] | None:
    """Split ``a,b[x=1,y=2],c`` at commas outside brackets (method specs may hold commas)."""
    if text is None:
        return None
    items, depth, current = [], 0, ""
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += ch
    items.append(current.strip())
    items = [i for i in items if i]
    if not items:
        raise BenchError(f"empty list {text!r}; give comma-separated values, e.g. 0.1,0.5")
    return items


def parse_numbers(text: str | None, kind: type, option: str) -> list | None:
    """``"0.05,0.1"`` -> [0.05, 0.1] with a clear error naming the option."""
    items = split_list(text)
    if items is None:
        return None
    try:
        return [kind(i) for i in items]
    except ValueError:
        raise BenchError(f"--{option} {text!r}: expected comma-separated {kind.__name__}s, e.g. "
                         f"{'0,1,2' if kind is int else '0.05,0.1'}") from None


def write_manifest(config: SweepConfig, specs: list[RunSpec], out: str | Path) -> Path:
    """Record the resolved sweep and its run ids under ``<out>/sweeps/`` (for provenance)."""
    from livar_bench.store import write_json

    ids = [s.run_id for s in specs]
    digest = json_digest(ids)
    folder = Path(out) / "sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.json"
    write_json(path, {"config": config.model_dump(mode="json"), "run_ids": ids})
    return path
