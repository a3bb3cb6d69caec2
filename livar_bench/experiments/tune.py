"""Hyperparameter selection on a validation split, never on the test set.

``tune`` runs every combination of a method's hyperparameter grid with ``val_fraction > 0`` (each
client holds out a seeded share of its own training data, see ``data.partition.carve_validation``),
scores each combination by its **last-round validation accuracy** averaged over the given seeds, and
writes ``<out>/tuning/<method>.json`` with the grid, every combination's scores and run ids, and the
chosen values. The tuning runs live in ``<out>/tuning/runs/`` so that test tables built from
``<out>/runs/`` never mix them in. The chosen spec string is then run on the test protocol as usual.

The federation loop also evaluates the test set every round, but nothing here reads those rows.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from livar_bench.config import RunSpec
from livar_bench.errors import BenchError
from livar_bench.methods.spec import MethodSpec, written_names

DEFAULT_VAL_FRACTION = 0.1  # used when the base settings hold out nothing
RUN = "run"  # the grid's name for run settings: --grid run.lr=1e-4,1e-3 (or lr=... when the method has no lr)
RUN_SETTINGS = ("lr", "weight_decay", "local_epochs", "batch_size", "lora_rank", "lora_alpha")
SCORE = ("val", "acc")  # (split, metric) that picks the winner; higher is better


@dataclass(frozen=True)
class Candidate:
    """One grid point: its method spec, the hyperparameter values and its validation scores."""

    spec: str  # the method spec, followed by the run settings of the point (" --lr 0.001") when tuned
    values: dict[str, Any]  # "component.key" (or "run.key") -> typed value
    run_ids: tuple[str, ...]
    scores: tuple[float, ...]  # last-round val acc per seed

    @property
    def mean(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else math.nan


@dataclass(frozen=True)
class TuneResult:
    """The sweep's candidates (grid order) and the chosen one."""

    method: str
    candidates: tuple[Candidate, ...]
    chosen: Candidate
    path: Path


def parse_grid(method: str, items: Sequence[str]) -> dict[tuple[str, str], list[str]]:
    """``["density=0.2,0.3", "ccvr.epochs=5,10"]`` -> {(component, key): values}.

    A key without ``component.`` belongs to the method's first component (the aggregator) when that
    component has it, else to the run settings (``RUN_SETTINGS``, e.g. the client learning rate ``lr``);
    ``run.KEY`` names a run setting explicitly.
    """
    if not items:
        raise BenchError("give at least one --grid KEY=V1,V2,..., e.g. --grid density=0.2,0.3,0.5")
    parsed = MethodSpec.parse(method)
    names, declared = parsed.names, parsed.hyperparameters()
    first = written_names(method)[0]  # a bare stage (ccvr) is what a bare key refers to, not fedavg
    grid: dict[tuple[str, str], list[str]] = {}
    for item in items:
        target, sep, raw = item.partition("=")
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not sep or not target.strip() or not values:
            raise BenchError(f"--grid {item!r}: expected KEY=V1,V2,... e.g. --grid density=0.2,0.3")
        component, dot, key = target.strip().rpartition(".")
        if not dot:
            component = RUN if key in RUN_SETTINGS and f"{first}.{key}" not in declared else first
        if component == RUN:
            if key not in RUN_SETTINGS:
                raise BenchError(f"--grid {item!r}: run setting {key!r} cannot be tuned; tunable: "
                                 f"{', '.join(RUN_SETTINGS)}")
        elif component not in names:
            raise BenchError(f"--grid {item!r}: {component!r} is not part of method {method!r} ({', '.join(names)})")
        if (component, key) in grid:
            raise BenchError(f"--grid sets {component}.{key} twice; give all its values in one --grid")
        if len(set(values)) != len(values):
            raise BenchError(f"--grid {item!r} lists a value twice")
        grid[(component, key)] = values
    return grid


def _setting(key: str, raw: str) -> Any:
    """A run setting's value typed as RunSpec declares it (validated again when the spec is built)."""
    kind = RunSpec.model_fields[key].annotation
    try:
        return int(raw) if kind in (int, "int") else float(raw)
    except ValueError:
        raise BenchError(f"--grid run.{key}: {raw!r} is not a number") from None


def grid_points(method: str, grid: dict[tuple[str, str], list[str]]) -> list[tuple[str, dict[str, Any]]]:
    """Every combination as (method spec string, {"component.key": typed value}), in grid order; run
    settings appear as ``run.key``."""
    base = MethodSpec.parse(method)
    keys = list(grid)
    points = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        spec = base
        run: dict[str, Any] = {}
        for (component, key), raw in zip(keys, combo, strict=True):
            if component == RUN:
                run[f"{RUN}.{key}"] = _setting(key, raw)
            else:
                spec = spec.with_param(component, key, raw)  # validates every key and value before anything runs
        typed = {**spec.hyperparameters(), **run}
        values = {f"{c}.{k}": typed[f"{c}.{k}"] for c, k in keys}
        points.append((str(spec), values))
    return points


def run_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The run settings of a grid point (``run.lr`` -> ``lr``)."""
    return {k[len(RUN) + 1:]: v for k, v in values.items() if k.startswith(f"{RUN}.")}


def label(spec: str, values: dict[str, Any]) -> str:
    """A grid point as a command line would give it: ``fedavg --lr 0.001``."""
    flags = {"local_epochs": "epochs"}
    extra = " ".join(f"--{flags.get(k, k).replace('_', '-')} {v:g}" if isinstance(v, float) else
                     f"--{flags.get(k, k).replace('_', '-')} {v}" for k, v in run_settings(values).items())
    return f"{spec} {extra}" if extra else spec


def choose(candidates: Sequence[Candidate]) -> Candidate:
    """Highest mean validation accuracy; ties go to the earlier grid point (a stable, documented rule)."""
    scored = [c for c in candidates if not math.isnan(c.mean)]
    if not scored:
        raise BenchError("no tuning run produced validation rows; is val_fraction > 0 and the data large enough?")
    return max(scored, key=lambda c: c.mean)  # max keeps the first of equal maxima


def last_val_acc(metrics: pd.DataFrame) -> float:
    """A run's last-round validation accuracy (the tuning score)."""
    split, metric = SCORE
    rows = metrics[(metrics["split"] == split) & (metrics["metric"] == metric)]
    if rows.empty:
        return math.nan
    return float(rows.loc[rows["round"].idxmax(), "value"])


def file_name(method: str) -> str:
    """A file-system-safe name for a method spec (``ties`` -> ``ties.json``)."""
    return re.sub(r"[^a-z0-9+_.-]+", "_", method.lower()).strip("_") + ".json"


def tune(
    base: RunSpec,
    method: str,
    grid_items: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
    on_event: Callable[..., None] | None = None,
) -> TuneResult:
    """Run the grid on the validation split and record the choice in ``<out>/tuning/<method>.json``.

    Args:
        base: settings shared by every tuning run (its method and seed are replaced); a zero
            ``val_fraction`` becomes ``DEFAULT_VAL_FRACTION``.
        method: the method spec to tune, e.g. ``ties`` or ``livar+ccvr``.
        grid_items: ``KEY=V1,V2`` strings (see ``parse_grid``).
        seeds: seeds each grid point is run with; scores are averaged over them.
    """
    from livar_bench.federation import run_federation
    from livar_bench.store import RunStore, write_json

    if not seeds:
        raise BenchError("give at least one seed to tune with, e.g. --seeds 0")
    points = grid_points(method, parse_grid(method, grid_items))
    val_fraction = base.val_fraction or DEFAULT_VAL_FRACTION
    specs = [[base.replace(method=spec, seed=seed, val_fraction=val_fraction, **run_settings(values)) for seed in seeds]
             for spec, values in points]
    root = Path(out).expanduser() / "tuning"
    store = RunStore(root)
    emit = on_event or (lambda *a, **k: None)
    candidates = []
    for (_, values), runs in zip(points, specs, strict=True):
        ids, scores = [], []
        for run in runs:
            emit("tune_run", spec=label(run.method, values), seed=run.seed, total=len(points) * len(seeds))
            outcome = run_federation(run, root, on_event=on_event)
            if not store.is_done(outcome.run_id):
                raise BenchError(f"tuning run {outcome.run_id} is held by another process; rerun when it has finished")
            ids.append(outcome.run_id)
            scores.append(last_val_acc(store.metrics(outcome.run_id)))
        candidates.append(Candidate(label(runs[0].method, values), values, tuple(ids), tuple(scores)))
    chosen = choose(candidates)
    path = root / file_name(method)
    root.mkdir(parents=True, exist_ok=True)
    settings = base.model_dump(mode="json")
    settings.update(val_fraction=val_fraction)
    for key in ("method", "seed", *(k for c, k in parse_grid(method, grid_items) if c == RUN)):
        settings.pop(key)
    write_json(path, {
        "method": method,
        "selection": "highest mean over seeds of last-round validation accuracy (split=val); test rows unused",
        "val_fraction": val_fraction,
        "seeds": list(seeds),
        "grid": {f"{c}.{k}": v for (c, k), v in parse_grid(method, grid_items).items()},
        "chosen": {"spec": chosen.spec, "values": chosen.values, "val_acc": chosen.mean},
        "results": [{"spec": c.spec, "values": c.values, "val_acc": c.mean, "val_acc_per_seed": list(c.scores),
                     "run_ids": list(c.run_ids)} for c in candidates],
        "settings": settings,
    })
    return TuneResult(method, tuple(candidates), chosen, path)
