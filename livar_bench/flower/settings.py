"""The run settings of a Flower deployment: which keys the App's run config has and which value wins.

Keys (``run_config_keys``): every ``RunSpec`` field with ``-`` for ``_`` (``num-clients``,
``max-train-samples``, ...; derived from RunSpec, so a new field is a new key), plus the App's own:
``out`` (results folder), ``config`` (a YAML file of run settings, the file ``livar-bench run --config``
reads) and ``node-wait-s`` (how long the server waits for the run's SuperNodes). Flower accepts a
``flwr run --run-config`` key only if the App's ``[tool.flwr.app.config]`` lists it, so the example App
lists them all (tests/flower/test_flower_apps.py checks).

Precedence, highest first (the rule of ``livar-bench run``: options over the YAML over the defaults):

1. the values given to ``flwr run --run-config`` (Flower keeps them as the run's override config);
2. the YAML file named by ``config``;
3. ``[tool.flwr.app.config]`` of the App's pyproject.toml;
4. RunSpec's defaults.

An empty string means "not set" at every level (TOML has no null), so the next level down applies.
Paths: a relative ``config`` is taken in the App's folder (the one holding its pyproject.toml; Flower
ships YAML files in the App bundle), a relative ``out`` in the home directory of the account that runs
the ServerApp; ``~`` is expanded in both.
"""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livar_bench.config import RunSpec, load_yaml, make_spec
from livar_bench.errors import BenchError
from livar_bench.flower.strategy import NODE_WAIT_S

# The App's own keys and their defaults (used when no level sets them).
APP_DEFAULTS: dict[str, Any] = {"out": "livar-bench-results", "config": "", "node-wait-s": NODE_WAIT_S}
SOURCES = ("run-config", "config file", "app config")  # levels 1-3 above, as the ServerApp's log names them


def field_keys() -> dict[str, str]:
    """Run-config key -> RunSpec field, for every RunSpec field (``num-clients`` -> ``num_clients``)."""
    return {name.replace("_", "-"): name for name in RunSpec.model_fields}


def run_config_keys() -> list[str]:
    """Every key an App's run config may hold: the RunSpec fields, then the App's own keys."""
    return [*field_keys(), *APP_DEFAULTS]


@dataclass(frozen=True)
class AppSettings:
    """A Flower run's settings, resolved."""

    spec: RunSpec
    out: Path  # absolute
    node_wait_s: float
    config_file: Path | None  # the YAML read, absolute
    sources: dict[str, str]  # run-config key -> the level its value came from (keys left at RunSpec defaults absent)

    def describe(self) -> str:
        """One line: which keys each level set."""
        by = {source: sorted(k for k, s in self.sources.items() if s == source) for source in SOURCES}
        parts = [f"{source}{f' {self.config_file}' if source == 'config file' else ''}: {', '.join(keys)}"
                 for source, keys in by.items() if keys]
        return "; ".join(parts) or "all RunSpec defaults"


def _key(key: str) -> str:
    """The canonical run-config key of ``key`` (``num_clients`` -> ``num-clients``); unknown keys are errors."""
    canonical = key.replace("_", "-")
    if canonical in APP_DEFAULTS or canonical in field_keys():
        return canonical
    near = difflib.get_close_matches(canonical, run_config_keys(), n=2)
    hint = f" (did you mean {' or '.join(near)}?)" if near else ""
    raise BenchError(f"unknown run-config key {key!r}{hint}; use RunSpec fields with '-' (e.g. method, dataset, "
                     f"num-clients, rounds, max-train-samples) or {', '.join(APP_DEFAULTS)}")


def _canonical(level: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``level`` with canonical keys and the unset ("") values left out; both spellings of one key refused."""
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in level.items():
        canonical = _key(key)
        if spelled.setdefault(canonical, key) != key:
            raise BenchError(f"{where} sets {canonical!r} twice (as {spelled[canonical]!r} and {key!r}); keep one")
        if value != "":  # "" = not set (TOML has no null)
            out[canonical] = value
    return out


def _field_value(field: str, value: Any) -> Any:
    """A run-config value as RunSpec takes it: comma-separated text for tuple fields, as the CLI takes it."""
    annotation = RunSpec.model_fields[field].annotation
    tuple_type = next((a for a in (annotation, *typing.get_args(annotation)) if typing.get_origin(a) is tuple), None)
    if tuple_type is None or not isinstance(value, str):
        return value
    item = typing.get_args(tuple_type)[0]
    try:
        return tuple(item(t.strip()) for t in value.split(",") if t.strip())
    except ValueError:
        raise BenchError(f"{field.replace('_', '-')} = {value!r}: expected comma-separated values, e.g. "
                         f"'4,8,16'") from None


def resolve(run_config: Mapping[str, Any], explicit: Mapping[str, Any] | None = None, *,
            app_dir: str | Path | None = None, home: str | Path | None = None) -> AppSettings:
    """Resolve a Flower run's settings (the precedence in the module docstring).

    Args:
        run_config: the run config Flower gives the ServerApp (the App's ``[tool.flwr.app.config]``
            with the ``--run-config`` values applied).
        explicit: the ``--run-config`` values alone (the run's override config); None = none given.
        app_dir: the App's folder, where a relative ``config`` lies (default: the working directory).
        home: where a relative ``out`` goes (default: the home directory).
    """
    given = _canonical(explicit or {}, "--run-config")
    app = {k: v for k, v in _canonical(run_config, "the run config").items() if k not in given}
    own = {**APP_DEFAULTS, **app, **given}
    config_file = None
    yaml_values: dict[str, Any] = {}
    if own["config"] != "":
        config_file = Path(str(own["config"])).expanduser()
        if not config_file.is_absolute():
            config_file = Path(app_dir or Path.cwd()) / config_file
        yaml_values = load_yaml(config_file)  # raises naming the absolute path it tried
    unknown = sorted(k for k in yaml_values if k not in RunSpec.model_fields)
    if unknown:  # the YAML holds run settings under their RunSpec names, as for livar-bench run --config
        raise BenchError(f"config file {config_file}: unknown setting(s) {', '.join(map(repr, unknown))}; it holds "
                         f"RunSpec fields with '_' (e.g. backbone, lora_rank, max_train_samples)")
    fields = field_keys()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    from_yaml = {k.replace("_", "-"): v for k, v in yaml_values.items()}  # taken as they are (null = None)
    for source, level in (("app config", app), ("config file", from_yaml), ("run-config", given)):
        for key, value in level.items():
            if key in fields:
                values[fields[key]] = _field_value(fields[key], value) if source != "config file" else value
            sources[key] = source
    spec = make_spec(values)
    try:
        wait = float(own["node-wait-s"])
    except (TypeError, ValueError):
        wait = -1.0
    if not (wait > 0 and math.isfinite(wait)) or isinstance(own["node-wait-s"], bool):
        raise BenchError(f"node-wait-s = {own['node-wait-s']!r}: give the seconds to wait for the SuperNodes "
                         f"(a number > 0, default {NODE_WAIT_S:g})")
    out = Path(str(own["out"])).expanduser()
    if not out.is_absolute():
        out = Path(home or Path.home()) / out
    return AppSettings(spec, out, wait, config_file, sources)
