"""The declared hyperparameters of a method class, read back: type, range or choices, help, default.

One source for ``ls methods``, the cards' tables, error messages and the spec grammar's typing of
``key=value`` strings. Values are typed and checked by pydantic, from the field's own declaration
(``Annotated[float, Field(ge=0, lt=1, description=...)]``); the grammar adds only what pydantic does not
know: ``none``, ``null`` and an empty value mean None for an optional field, and literal choices may be
written in any case.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import TypeAdapter, ValidationError

from livar_bench.errors import BenchError
from livar_bench.methods.describe import CONFIG

KINDS = {float: "float", int: "int", bool: "bool", str: "str"}


@dataclass(frozen=True)
class Hyperparameter:
    """One declared hyperparameter.

    Attributes:
        kind: "float", "int", "bool", "str" or "choice" (a ``Literal``).
        choices: the allowed values of a choice (and true/false for a bool), else None.
        low, high: bounds of a number (None: unbounded), ``*_closed`` whether the bound is allowed.
        nullable: None is allowed (written ``none``).
        examples: example values of a free-text field (``Field(examples=[...])``).
    """

    name: str
    kind: str
    help: str
    default: Any
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    low_closed: bool = True
    high: float | None = None
    high_closed: bool = True
    nullable: bool = False
    examples: tuple[str, ...] = ()

    @property
    def range(self) -> str | None:
        """The interval of a number (``[0, 1)``, ``(0, inf)``), None for other kinds."""
        if self.kind not in ("float", "int"):
            return None
        low = "(-inf" if self.low is None else ("[" if self.low_closed else "(") + _number(self.low)
        high = "inf)" if self.high is None else _number(self.high) + ("]" if self.high_closed else ")")
        return f"{low}, {high}"

    @property
    def domain(self) -> str:
        """What is allowed, shortly: ``in [0, 1)``, ``integer in [1, inf)``, ``in {mean, sum}``, ``text``."""
        if self.choices is not None:
            text = "in {" + ", ".join(render(c) for c in self.choices) + "}"
        elif self.kind == "int":
            text = f"integer in {self.range}"
        elif self.kind == "float":
            text = f"in {self.range}"
        else:
            text = "text" + (f", e.g. {' or '.join(self.examples)}" if self.examples else "")
        return text + (" or none" if self.nullable else "")

    @property
    def allowed(self) -> str:
        """What is allowed, as a phrase for error messages (``a number in [0, 1)``)."""
        if self.choices is not None:
            text = "one of " + ", ".join(render(c) for c in self.choices)
        elif self.kind == "int":
            text = f"an integer in {self.range}"
        elif self.kind == "float":
            text = "a finite number" if self.low is None and self.high is None else f"a number in {self.range}"
        else:
            text = "text" + (f", e.g. {' or '.join(self.examples)}" if self.examples else "")
        return text + (", or none" if self.nullable else "")

    def to_json(self) -> dict[str, Any]:
        """The machine-readable form ``ls methods --format json`` prints."""
        return {"name": self.name, "type": self.kind, "default": self.default, "help": self.help,
                "range": self.range, "choices": list(self.choices) if self.choices is not None else None,
                "nullable": self.nullable, "examples": list(self.examples) or None, "allowed": self.allowed}


def declared(cls: type, defaults: dict[str, Any] | None = None) -> list[Hyperparameter]:
    """The hyperparameters of a ``describe``d class, in declaration order, with ``defaults`` (name ->
    value) in place of the class's own where given (a preset registration, CCVR's resolved preset)."""
    defaults = defaults or {}
    return [_read(name, info, defaults.get(name, info.default)) for name, info in cls.__pydantic_fields__.items()]


def coerce(component: str, cls: type, key: str, raw: Any) -> Any:
    """``raw`` (a spec-string value or a typed one) as hyperparameter ``key`` of ``cls``, validated.

    Raises:
        BenchError: one line naming ``component``, the key, what is allowed and the help text.
    """
    fields = cls.__pydantic_fields__
    if key not in fields:
        raise BenchError(f"{component} has no hyperparameter {key!r}; valid: {', '.join(fields) or 'none'}")
    hp = _read(key, fields[key], fields[key].default)
    try:
        return _adapter(cls, key).validate_python(_from_grammar(hp, raw))
    except ValidationError:
        raise BenchError(problem(component, hp, raw)) from None


def problem(component: str, hp: Hyperparameter, raw: Any) -> str:
    """The one-line message for a value of ``hp`` that cannot be used."""
    return f"{component}.{hp.name}: cannot use {raw!r}: expected {hp.allowed}. {hp.name}: {hp.help}"


def render(value: Any) -> str:
    """A value as spec strings write it (``true``/``false``, numbers and text as ``str``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


@cache
def _adapter(cls: type, key: str) -> TypeAdapter:
    info = cls.__pydantic_fields__[key]
    hint = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return TypeAdapter(hint, config=CONFIG)


def _from_grammar(hp: Hyperparameter, raw: Any) -> Any:
    """The grammar's spellings that pydantic does not read: none/null/empty, and choices in any case."""
    if not isinstance(raw, str):
        return raw
    if hp.nullable and raw.lower() in ("none", "null", ""):
        return None
    if hp.kind == "choice" and raw.lower() in {str(c).lower() for c in hp.choices}:
        return raw.lower()
    return raw


def _read(name: str, info: Any, default: Any) -> Hyperparameter:
    hint = info.annotation
    nullable = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(options) < len(typing.get_args(hint))
        if len(options) != 1:
            raise TypeError(f"hyperparameter {name}: a union other than Optional is not supported ({hint})")
        hint = options[0]
    bounds: dict[str, Any] = {}
    for rule in info.metadata:  # pydantic keeps Field(gt=..., le=...) as annotated_types objects
        if isinstance(rule, annotated_types.Gt):
            bounds.update(low=rule.gt, low_closed=False)
        elif isinstance(rule, annotated_types.Ge):
            bounds.update(low=rule.ge, low_closed=True)
        elif isinstance(rule, annotated_types.Lt):
            bounds.update(high=rule.lt, high_closed=False)
        elif isinstance(rule, annotated_types.Le):
            bounds.update(high=rule.le, high_closed=True)
    if typing.get_origin(hint) is Literal:
        return Hyperparameter(name, "choice", info.description, default, choices=typing.get_args(hint),
                              nullable=nullable)
    if hint not in KINDS:
        raise TypeError(f"hyperparameter {name}: type {hint} is not one of float, int, bool, str or a Literal")
    return Hyperparameter(name, KINDS[hint], info.description, default, choices=(True, False) if hint is bool else None,
                          nullable=nullable, examples=tuple(info.examples or ()), **bounds)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and math.isfinite(value) else str(value)
