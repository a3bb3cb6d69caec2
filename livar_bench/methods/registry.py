"""Method registry: every aggregator and stage by name, as registered in ``methods/__init__.py``.

A registered class describes itself (``@describe``: paper, label, summary, table order, card; fields =
hyperparameters with types, ranges and help). ``register(cls)`` files it under the name it is described
with; ``register(cls, name=..., defaults={...})`` files the same class again as a preset under its own
name (its spec strings, run ids and buffer namespaces use that name). Specs that combine entries
(``livar+ccvr``) are parsed by ``methods.spec.MethodSpec``.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from pydantic import ValidationError

from livar_bench.errors import BenchError
from livar_bench.methods.base import Aggregator, Component, Stage
from livar_bench.methods.hyperparameters import Hyperparameter, coerce, declared, problem


@dataclass(frozen=True)
class Entry:
    """A registered method or stage: a described class under a name, with preset defaults if any.

    Attributes:
        kind: "method" (an ``Aggregator``, first in a spec) or "stage" (a ``Stage``, after it).
        label, paper, summary, order, card: the class's description, where the registration does not
            give its own (see ``methods.describe.Description``).
        presets: hyperparameter values this registration uses in place of the class's defaults.
    """

    name: str
    cls: type
    kind: Literal["method", "stage"]
    paper: str
    summary: str
    label: str
    order: int
    card: str
    presets: Mapping[str, Any] = field(default_factory=dict)

    def build(self, args: Mapping[str, Any] | None = None) -> Component:
        """An instance with ``args`` (typed values) over this entry's defaults, validated.

        Raises:
            BenchError: one line naming the entry, the key, what is allowed and the help text, or the
                component's own message for settings that do not fit together.
        """
        values = {**self.presets, **(args or {})}
        try:
            return self.cls(**values)
        except ValidationError as err:
            raise BenchError(self._explain(err, values)) from None
        except (TypeError, ValueError) as err:
            raise BenchError(f"{self.name}: {err}") from None

    def coerce(self, key: str, raw: Any) -> Any:
        """``raw`` (a spec-string value) typed as hyperparameter ``key`` and checked against its range."""
        return coerce(self.name, self.cls, key, raw)

    @cached_property
    def default(self) -> Component:
        """The instance every field of which is at this entry's default."""
        return self.build()

    def defaults(self) -> dict[str, Any]:
        """Default hyperparameter values; for a component with presets (CCVR), the default preset's
        choices resolved (its fields default to None, "from the preset")."""
        return {f.name: getattr(self.default, f.name) for f in dataclasses.fields(self.cls)}

    def hyperparameters(self) -> list[Hyperparameter]:
        """The declared hyperparameters with this entry's defaults: type, range or choices, help."""
        return declared(self.cls, self.defaults())

    @property
    def requires(self) -> frozenset:
        """The client signals the default instance needs."""
        return self.default.requires

    def _explain(self, err: ValidationError, values: Mapping[str, Any]) -> str:
        problems = []
        for item in err.errors():
            key = str(item["loc"][0]) if item["loc"] else ""
            if item["type"] == "unexpected_keyword_argument":
                problems.append(f"{self.name} has no hyperparameter {key!r}; valid: "
                                f"{', '.join(f.name for f in dataclasses.fields(self.cls)) or 'none'}")
            elif key in self.cls.__pydantic_fields__:
                hp = next(h for h in declared(self.cls) if h.name == key)
                problems.append(problem(self.name, hp, values.get(key, item.get("input"))))
            else:  # a check of the component's own (__post_init__) on settings that do not fit together
                reason = item.get("ctx", {}).get("error", item["msg"])
                problems.append(f"{self.name}: {reason}")
        return "; ".join(problems)


_REGISTRY: dict[str, Entry] = {}


def register(cls: type, *, name: str | None = None, label: str | None = None, summary: str | None = None,
             order: int | None = None, defaults: Mapping[str, Any] | None = None, **old: Any) -> type:
    """Register a ``@describe``d method or stage (one line per entry in ``methods/__init__.py``).

    Args:
        cls: the class, an ``Aggregator`` ("method") or ``Stage`` ("stage") subclass.
        name: the registered name, if not the one the class is described with (a preset of it).
        label, summary, order: the preset's own, where they differ from the class's.
        defaults: hyperparameter values of the preset, in place of the class's defaults.

    Returns:
        ``cls``, unchanged.

    Example: ``register(FedAMS)`` and ``register(FedAMS, name="fedamsgrad", label="FedAMSGrad",
    defaults={"stabiliser": "add"})``.
    """
    if isinstance(cls, str) or old:  # the decorator form of earlier versions: register("name", kind=...)(cls)
        raise TypeError(f"register({cls!r}, ...) takes the class now: describe it with @describe(name, paper=..., "
                        "summary=..., label=..., order=...) and write register(TheClass)")
    about = cls.__dict__.get("description")  # its own, not one inherited from a described parent
    if about is None:
        raise TypeError(f"{cls.__name__} has no @describe(...) of its own: declare its paper, summary, label and "
                        "order on the class to register it")
    if issubclass(cls, Aggregator):
        kind = "method"
    elif issubclass(cls, Stage):
        kind = "stage"
    else:
        raise TypeError(f"{cls.__name__} must subclass Aggregator (a method) or Stage (a stage) to be registered")
    name = name or about.name
    if name in _REGISTRY:
        raise ValueError(f"method name {name!r} is registered twice")
    entry = Entry(name=name, cls=cls, kind=kind, paper=about.paper, summary=summary or about.summary,
                  label=label or (about.label if name == about.name else name), order=about.order if order is None else order,
                  card=about.card, presets=dict(defaults or {}))
    _ = entry.default  # a preset's values are validated now, not at its first use
    _REGISTRY[name] = entry
    return cls


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
