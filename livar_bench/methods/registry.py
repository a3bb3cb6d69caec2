"""Method registry: every aggregator and stage by name, with its paper, display name and table order.

A registered component is a frozen dataclass whose fields are its hyperparameters, subclassing
``methods.base.Aggregator`` (kind "method") or ``methods.base.Stage`` (kind "stage"). Specs that
combine them (``livar+ccvr``) are parsed by ``methods.spec.MethodSpec``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from livar_bench.errors import BenchError
from livar_bench.methods.base import Aggregator, Stage


@dataclass(frozen=True)
class Entry:
    """A registered method or stage.

    Attributes:
        label: display name in tables and plots (e.g. "LIVAR").
        order: position in tables (smaller first); baselines before the methods they are compared with.
    """

    name: str
    cls: type
    kind: Literal["method", "stage"]
    paper: str
    summary: str
    label: str
    order: int

    @property
    def requires(self) -> frozenset:
        return self.cls().requires

    def defaults(self) -> dict[str, Any]:
        """Default hyperparameter values; for a component with presets (CCVR), the default preset's
        choices resolved (its fields default to None, "from the preset")."""
        if getattr(self.cls, "preset_fields", ()):
            instance = self.cls()
            return {f.name: getattr(instance, f.name) for f in dataclasses.fields(self.cls)}
        return {f.name: f.default for f in dataclasses.fields(self.cls)}


_REGISTRY: dict[str, Entry] = {}


def register(name: str, *, kind: Literal["method", "stage"], paper: str, summary: str, label: str | None = None,
             order: int = 1000) -> Callable[[type], type]:
    """Class decorator registering a method or stage under ``name``.

    Example: ``register("median", kind="method", paper="-", summary="Coordinate-wise median.")(Median)``.
    """

    def wrap(cls: type) -> type:
        base = Aggregator if kind == "method" else Stage
        if not (dataclasses.is_dataclass(cls) and issubclass(cls, base)):
            raise TypeError(f"{cls.__name__} must be a frozen dataclass subclassing {base.__name__} to be "
                            f"registered as a {kind}")
        if name in _REGISTRY:
            raise ValueError(f"method name {name!r} is registered twice")
        _REGISTRY[name] = Entry(name=name, cls=cls, kind=kind, paper=paper, summary=summary, label=label or name,
                                order=order)
        return cls

    return wrap


def entries() -> list[Entry]:
    """Every registered method and stage, methods first, each kind in table order."""
    return sorted(_REGISTRY.values(), key=lambda e: (e.kind != "method", e.order))


def get_entry(name: str) -> Entry:
    """Look up a method or stage by name, suggesting close names when unknown."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise BenchError(f"unknown method {name!r}.{hint} Known: {', '.join(sorted(_REGISTRY))} (livar-bench ls methods)")


def coerce(entry: Entry, key: str, raw: Any) -> Any:
    """``raw`` converted to the type of ``entry``'s hyperparameter ``key`` (a clear error when it cannot be)."""
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
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("expected a finite number")
        return value
    if hint is str:
        if not isinstance(raw, (str, int, float)):
            raise ValueError("expected a string")
        return str(raw)
    raise TypeError(f"unsupported hyperparameter type {hint}")
