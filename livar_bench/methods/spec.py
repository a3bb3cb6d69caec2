"""``MethodSpec``: a method spec string parsed, validated and canonicalised once.

Grammar: ``<method>[k=v,...](+<stage>[k=v,...])*``, for example ``livar``, ``livar+ccvr``,
``ties[density=0.2,lam=1.0]+ccvr``. Names and keys are case-insensitive; values keep their case. A
value holding ``+ , [ ] = "`` or spaces is written in double quotes with JSON escapes
(``livar[rule="/tmp/My Rules/r+1.json"]``), so any file path works as a value.

Canonical form (what run ids hash): a bare stage gets its implied aggregator (``ccvr`` ->
``fedavg+ccvr``), hyperparameters equal to their defaults are dropped, the rest are sorted by key and
rendered as ``true``/``false`` and ``str(value)``, quoted only where the grammar needs it. Rendering a
parsed spec gives back the canonical string, and parsing that gives an equal spec.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from livar_bench.errors import BenchError
from livar_bench.methods.base import Method, Slot, bind
from livar_bench.methods.registry import Entry, entries, get_entry

IMPLIED_AGGREGATOR = "fedavg"  # what a bare stage runs after
_SPECIAL = set('+,[]="\\') | {" ", "\t"}


@dataclass(frozen=True)
class Part:
    """One component of a spec: a registered name and its non-default hyperparameters (typed, sorted)."""

    name: str
    args: tuple[tuple[str, Any], ...] = ()

    @property
    def entry(self) -> Entry:
        return get_entry(self.name)

    def render(self) -> str:
        if not self.args:
            return self.name
        return f"{self.name}[{','.join(f'{k}={render_value(v)}' for k, v in self.args)}]"


@dataclass(frozen=True)
class MethodSpec:
    """A validated, canonical method spec; ``str()`` gives the canonical string, ``build()`` the Method.

    Build it with ``MethodSpec.parse(text)``. Components are built (and any file they read is read)
    once per spec object: ``build()`` and ``content_digests`` reuse them.
    """

    parts: tuple[Part, ...]

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        """Parse and validate ``text``; every problem is a ``BenchError`` naming the method and key."""
        raw = list(_tokenise(text))
        if get_entry(raw[0][0]).kind == "stage":
            raw.insert(0, (IMPLIED_AGGREGATOR, {}))
        spec = cls(tuple(_canonical_part(name, args, text, position) for position, (name, args) in enumerate(raw)))
        for part in spec.parts[:-1]:
            if getattr(part.entry.cls, "last", False):
                raise BenchError(f"{part.name} must be the last part of a method spec (it acts on what clients "
                                 f"send, before every server step, whatever its position): write "
                                 f"{'+'.join(p.render() for p in spec.parts if p.name != part.name)}+{part.render()}")
        _ = spec.components  # build now: a bad value or unreadable file fails at parse time
        method = spec.build()
        for stage in method.stages:  # settings that do not fit the method they are part of
            try:
                stage.check(method)
            except ValueError as err:
                raise BenchError(f"{stage.slot.name}: {err}") from None
        return spec

    def __str__(self) -> str:
        return "+".join(p.render() for p in self.parts)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parts]

    @property
    def namespaces(self) -> list[str]:
        """Each part's namespace: its name, or ``name#k`` for the k-th occurrence of a name (``Slot``)."""
        seen: Counter[str] = Counter()
        out = []
        for part in self.parts:
            seen[part.name] += 1
            out.append(part.name if seen[part.name] == 1 else f"{part.name}#{seen[part.name]}")
        return out

    @cached_property
    def components(self) -> tuple[Any, ...]:
        """The built aggregator and stages, in order, each told its slot (name, position, namespace)."""
        return tuple(bind(part.entry.build(dict(part.args)), Slot(part.name, position, namespace))
                     for position, (part, namespace) in enumerate(zip(self.parts, self.namespaces, strict=True)))

    def build(self) -> Method:
        """The ``Method`` (objective, aggregator, stages) this spec describes."""
        aggregator, *stages = self.components
        return Method(spec=str(self), aggregator=aggregator, stages=tuple(stages))

    @cached_property
    def content_digests(self) -> dict[str, str]:
        """Digests of files the components read (e.g. a LIVAR rule), keyed by component namespace."""
        out = {}
        for namespace, component in zip(self.namespaces, self.components, strict=True):
            digest = component.content_digest()
            if digest:
                out[namespace] = digest
        return out

    @cached_property
    def recipe_versions(self) -> dict[str, int]:
        """Recipe versions of the components that declare one (``Component.recipe``), by name.

        Part of the run id: a component whose default behaviour changed after runs were made with it
        (CCVR and TIES, issue 13) bumps its version, so its specs get new ids while every other
        method keeps its ids. Keyed by name, not namespace: a name has one class, hence one version.
        """
        return {p.name: p.entry.cls.recipe for p in self.parts if p.entry.cls.recipe is not None}

    def with_param(self, name: str, key: str, value: Any) -> MethodSpec:
        """A new spec with hyperparameter ``key`` of component ``name`` (a name, or the namespace
        ``name#k`` of a later occurrence) set to ``value`` (validated)."""
        name, key = name.strip().lower(), key.strip().lower()
        if name not in self.namespaces:
            raise BenchError(f"{name!r} is not part of method {str(self)!r} (parts: {', '.join(self.namespaces)})")
        raw = [(p.name, dict(p.args)) for p in self.parts]
        raw[self.namespaces.index(name)][1][key] = value
        text = "+".join(p.render() for p in self.parts)
        parts = tuple(_canonical_part(n, a, text, i) for i, (n, a) in enumerate(raw))
        spec = MethodSpec(parts)
        _ = spec.components
        return spec

    def hyperparameters(self) -> dict[str, Any]:
        """Every hyperparameter of every component (defaults included), keyed ``namespace.key``."""
        out = {}
        for namespace, component in zip(self.namespaces, self.components, strict=True):
            for f in dataclasses.fields(component):
                out[f"{namespace}.{f.name}"] = getattr(component, f.name)
        return out


def parse_method(spec: str) -> Method:
    """Build a ``Method`` from a spec string (``MethodSpec.parse(spec).build()``)."""
    return MethodSpec.parse(spec).build()


def canonical_spec(spec: str) -> str:
    """The canonical string of ``spec`` (``livar[head_subset=correct]`` -> ``livar``, ``ccvr`` -> ``fedavg+ccvr``)."""
    return str(MethodSpec.parse(spec))


def upgrade_spec(text: str) -> str:
    """A method string as stored by older versions, in today's form: a bare stage gets its implied
    aggregator (results made before ``ccvr`` meant ``fedavg+ccvr`` in run ids). Reads no files."""
    try:
        first = next(_tokenise(text))[0]
        bare_stage = get_entry(first).kind == "stage"
    except BenchError:
        return text
    return f"{IMPLIED_AGGREGATOR}+{text.strip()}" if bare_stage else text


def written_names(text: str) -> list[str]:
    """The component names as written in ``text`` (``ccvr`` -> ["ccvr"], before the implied aggregator)."""
    return [name for name, _ in _tokenise(text)]


def display_name(text: str) -> str:
    """Table label of a spec: registry labels joined by " + " (``livar+ccvr`` -> "LIVAR + CCVR").

    A stage on the implied aggregator is named by the stage alone (``fedavg+ccvr`` -> "CCVR"), as papers
    do; hyperparameters are shown as given. A string that no longer parses is shown as it is.
    """
    try:
        spec = MethodSpec.parse(text)
    except BenchError:
        return text
    parts = list(spec.parts)
    if len(parts) > 1 and parts[0] == Part(IMPLIED_AGGREGATOR) and not getattr(parts[1].entry.cls, "last", False):
        parts = parts[1:]  # "CCVR", as papers name it; a wrapper (dp) keeps its method: "FedAvg + DP"
    return " + ".join(p.entry.label + (p.render()[len(p.name):] if p.args else "") for p in parts)


def table_order(text: str) -> tuple[int, int, str]:
    """Sort key of a spec in tables: the registry order of its principal part (the aggregator, or the
    stage on the implied aggregator), then the number of parts, then the string."""
    try:
        spec = MethodSpec.parse(text)
    except BenchError:
        return (10**9, 0, text)
    core = [p for p in spec.parts if not getattr(p.entry.cls, "last", False)]  # a wrapper (dp) does not move it
    principal = core[-1] if core[0] == Part(IMPLIED_AGGREGATOR) and len(core) > 1 else core[0]
    return (principal.entry.order, len(spec.parts), str(spec))


def render_value(value: Any) -> str:
    """A hyperparameter value as the grammar writes it (quoted only when it has to be)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if not text or any(c in _SPECIAL for c in text):
        return json.dumps(text)
    return text


def _canonical_part(name: str, args: dict[str, Any], text: str, position: int) -> Part:
    entry = get_entry(name)
    if position == 0 and entry.kind != "method":
        raise BenchError(f"{name!r} is a stage; it must follow a method, e.g. fedavg+{name}")
    if position > 0 and entry.kind != "stage":
        stages = ", ".join(e.name for e in entries() if e.kind == "stage")
        raise BenchError(f"{name!r} is an aggregation method and can only come first in {text!r}; "
                         f"stages that can follow: {stages}")
    typed = {key: entry.coerce(key, value) for key, value in args.items()}
    # A component with presets (CCVR's ``preset``) resolves its other settings from the chosen preset:
    # a setting is "changed" when it differs from that preset's value, a preset when it differs from the
    # default one. So ``ccvr[preset=paper,model=pooled_full]`` is ``ccvr[preset=paper]``. Without presets
    # the reference is the entry's default instance.
    presets = {k: v for k, v in typed.items() if k in entry.cls.preset_fields}
    chosen = entry.build(presets) if presets else entry.default
    defaults = entry.defaults()
    reference = {k: defaults[k] if k in entry.cls.preset_fields else getattr(chosen, k) for k in defaults}
    changed = tuple((k, typed[k]) for k in sorted(typed) if typed[k] != reference[k])
    return Part(name, changed)


def _tokenise(text: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Split a spec into (lower-cased name, {lower-cased key: raw value}) parts, with clear errors."""
    if not isinstance(text, str) or not text.strip():
        raise BenchError("empty method spec; give e.g. --method livar or --method livar+ccvr")
    reader = _Reader(text.strip())
    while True:
        name = reader.word()
        if not name:
            raise BenchError(f"method spec {text!r}: expected a method name at position {reader.pos + 1} "
                             f"(a '+' must join two names, e.g. livar+ccvr)")
        args: dict[str, str] = {}
        if reader.take("["):
            while not reader.take("]"):
                if reader.done():
                    raise BenchError(f"method spec {text!r}: '[' is never closed; write {name}[key=value,...]")
                key = reader.word()
                if not key or not reader.take("="):
                    raise BenchError(f"method spec {text!r}: expected key=value inside {name}[...] at "
                                     f"position {reader.pos + 1}")
                if key.lower() in args:
                    raise BenchError(f"method spec {text!r}: {name}.{key} is given twice")
                args[key.lower()] = reader.value(text)
                if not reader.take(",") and reader.peek() != "]":
                    raise BenchError(f"method spec {text!r}: expected ',' or ']' after {name}.{key} at "
                                     f"position {reader.pos + 1}")
        yield name.lower(), args
        if reader.done():
            return
        if not reader.take("+"):
            raise BenchError(f"method spec {text!r}: unexpected {reader.peek()!r} at position {reader.pos + 1}; "
                             "expected '+' between parts")


class _Reader:
    """A cursor over a spec string (whitespace around tokens is ignored)."""

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def _skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def done(self) -> bool:
        self._skip()
        return self.pos >= len(self.text)

    def peek(self) -> str:
        self._skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def word(self) -> str:
        self._skip()
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] == "_"):
            self.pos += 1
        return self.text[start : self.pos]

    def value(self, whole: str) -> str:
        self._skip()
        if self.peek() == '"':
            decoder = json.JSONDecoder()
            try:
                value, end = decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError:
                raise BenchError(f"method spec {whole!r}: unterminated quoted value at position "
                                 f"{self.pos + 1}") from None
            self.pos = end
            return value
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ",]":
            if self.text[self.pos] in "[+":
                raise BenchError(f"method spec {whole!r}: {self.text[self.pos]!r} inside a value at position "
                                 f"{self.pos + 1}; put such values in double quotes")
            self.pos += 1
        return self.text[start : self.pos].strip()
