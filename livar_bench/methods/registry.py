"""Method registry and the method-spec grammar.

Grammar: ``<method>[k=v,...](+<stage>[k=v,...])*``, for example ``livar``, ``livar+ccvr``,
``ties[density=0.2,lam=1.0]+ccvr``. A bare stage (``ccvr``) means FedAvg followed by that stage.

A registered method is a frozen dataclass whose fields are its hyperparameters. Aggregators are
callables ``(global, updates, ctx) -> params``; a method that changes the client (FedProx) also has a
``local_objective()`` method. Stages are registered separately with the same call shape.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from livar_bench.errors import BenchError
from livar_bench.methods.base import CrossEntropy, Method


@dataclass(frozen=True)
class Entry:
    """A registered method or stage."""

    name: str
    cls: type
    kind: Literal["method", "stage"]
    paper: str
    summary: str

    @property
    def requires(self) -> frozenset:
        return self.cls().requires

    def defaults(self) -> dict[str, Any]:
        return {f.name: f.default for f in dataclasses.fields(self.cls)}


_REGISTRY: dict[str, Entry] = {}


def register(name: str, *, kind: Literal["method", "stage"], paper: str, summary: str) -> Callable[[type], type]:
    """Class decorator registering a method or stage under ``name``."""

    def wrap(cls: type) -> type:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a frozen dataclass to be registered")
        if name in _REGISTRY:
            raise ValueError(f"method name {name!r} is registered twice")
        _REGISTRY[name] = Entry(name=name, cls=cls, kind=kind, paper=paper, summary=summary)
        return cls

    return wrap


def entries() -> list[Entry]:
    """Every registered method and stage, methods first, in registration order."""
    return sorted(_REGISTRY.values(), key=lambda e: e.kind != "method")


def get_entry(name: str) -> Entry:
    """Look up a method or stage by name, suggesting close names when unknown."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    import difflib

    close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise BenchError(f"unknown method {name!r}.{hint} Known: {', '.join(sorted(_REGISTRY))} (livar-bench ls methods)")


_PART = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)(?:\[(?P<args>[^\]]*)\])?$", re.IGNORECASE)


def split_spec(spec: str) -> list[tuple[str, dict[str, str]]]:
    """Split a method spec into (name, raw key/value strings) parts."""
    if not spec or not spec.strip():
        raise BenchError("empty method spec; give e.g. --method livar or --method livar+ccvr")
    parts = []
    # Names and keys are case-insensitive; values keep their case (a LIVAR rule file path may need it).
    for raw in spec.strip().split("+"):
        match = _PART.match(raw.strip())
        if match is None:
            raise BenchError(f"cannot parse method spec {spec!r} at {raw!r}; expected name or name[key=value,...]")
        args: dict[str, str] = {}
        for item in filter(None, (a.strip() for a in (match["args"] or "").split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise BenchError(f"method spec {spec!r}: expected key=value, got {item!r}")
            args[key.strip().lower()] = value.strip()
        parts.append((match["name"].lower(), args))
    return parts


def render_spec(parts: list[tuple[str, dict[str, Any]]]) -> str:
    """The inverse of ``split_spec``: ``[("ties", {"density": "0.2"}), ("ccvr", {})]`` -> ``ties[density=0.2]+ccvr``."""
    return "+".join(f"{name}[{','.join(f'{k}={v}' for k, v in args.items())}]" if args else name
                    for name, args in parts)


def _coerce(entry: Entry, key: str, raw: Any) -> Any:
    fields = {f.name: f for f in dataclasses.fields(entry.cls)}
    if key not in fields:
        valid = ", ".join(fields) or "none"
        raise BenchError(f"{entry.name} has no hyperparameter {key!r}; valid: {valid}")
    hint = typing.get_type_hints(entry.cls)[key]
    try:
        return _convert(hint, raw)
    except (TypeError, ValueError) as err:
        raise BenchError(f"{entry.name}.{key}: cannot use {raw!r} ({err})") from None


def _convert(hint: Any, raw: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null", "")):
            if type(None) in options:
                return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, raw)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        choices = typing.get_args(hint)
        value = raw.lower() if isinstance(raw, str) else raw
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(map(str, choices))}")
        return value
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if hint is int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError("expected an integer")
        return int(raw)
    if hint is float:
        if isinstance(raw, bool):
            raise ValueError("expected a number")
        value = float(raw)
        return value
    if hint is str:
        if not isinstance(raw, (str, int, float)):
            raise ValueError("expected a string")
        return str(raw)
    raise TypeError(f"unsupported hyperparameter type {hint}")


def build_component(name: str, params: dict[str, Any]) -> tuple[Entry, Any]:
    """Instantiate a registered method/stage with validated hyperparameters."""
    entry = get_entry(name)
    kwargs = {key: _coerce(entry, key, value) for key, value in params.items()}
    try:
        return entry, entry.cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise BenchError(f"{name}: {err}") from None


def parse_method(spec: str, overrides: dict[str, dict[str, Any]] | None = None) -> Method:
    """Build a ``Method`` from a spec string; ``overrides`` maps component name -> hyperparameters."""
    overrides = overrides or {}
    parts = split_spec(spec)
    first_name = parts[0][0]
    if get_entry(first_name).kind == "stage":
        parts = [("fedavg", {}), *parts]
    objective: Any = CrossEntropy()
    aggregator = None
    stages = []
    for position, (name, args) in enumerate(parts):
        entry, component = build_component(name, {**overrides.get(name, {}), **args})
        if position == 0:
            if entry.kind != "method":
                raise BenchError(f"{name!r} is a stage; it must follow a method, e.g. fedavg+{name}")
            aggregator = component
            if hasattr(component, "local_objective"):
                objective = component.local_objective()
        else:
            if entry.kind != "stage":
                raise BenchError(
                    f"{name!r} is an aggregation method and can only come first in {spec!r}; "
                    f"stages that can follow: {', '.join(e.name for e in entries() if e.kind == 'stage')}"
                )
            stages.append(component)
    unknown = set(overrides) - {name for name, _ in parts}
    if unknown:
        raise BenchError(f"hyperparameters given for {', '.join(sorted(unknown))}, which {spec!r} does not use")
    return Method(spec=spec, objective=objective, aggregator=aggregator, stages=tuple(stages))


def canonical_spec(spec: str) -> str:
    """Spec string with hyperparameters that equal their defaults removed and the rest sorted.

    ``livar[head_subset=correct]`` and ``livar`` are the same experiment and get the same run id.
    """
    parts = split_spec(spec)
    rendered = []
    for name, args in parts:
        entry, component = build_component(name, args)
        defaults = entry.defaults()
        changed = {k: getattr(component, k) for k in sorted(args) if getattr(component, k) != defaults[k]}
        inner = ",".join(f"{k}={_render(v)}" for k, v in changed.items())
        rendered.append(f"{name}[{inner}]" if inner else name)
    return "+".join(rendered)


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def content_digests(spec: str) -> dict[str, str]:
    """Digests of files a spec's components read (e.g. a LIVAR rule file), keyed by component name.

    Part of the run id: a run that reads an edited file is a different experiment, even under the
    same path.
    """
    out = {}
    for name, args in split_spec(spec):
        _, component = build_component(name, args)
        digest = getattr(component, "content_digest", lambda: None)()
        if digest:
            out[name] = digest
    return out
