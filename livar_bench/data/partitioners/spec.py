"""Partition specs: ``name[key=value,...]``, the grammar of method specs for one partitioner.

``dirichlet[alpha=0.1]``, ``iid``, ``shards[per_client=2]``, ``classes[k=2]``,
``quantity[dist=powerlaw,exponent=1.2,labels=dirichlet,alpha=0.3]``, ``balanced_dirichlet[alpha=0.1]``,
``domain``. Names and keys are case-insensitive; a value holding ``, [ ] = "`` or spaces is written in
double quotes. The canonical form (what partition and run ids hash) keeps only settings that differ
from their defaults, sorted by key; parsing it gives back an equal partitioner.

The Dirichlet concentration is special: it is the RunSpec's own ``alpha`` field (so ``--alpha`` and
``alphas`` sweeps keep working, and tables group by it), and ``RunSpec.partition`` holds the rest of the
spec (``field_form``). ``dirichlet`` and ``iid`` therefore keep the ids they always had.
"""

from __future__ import annotations

import json
from typing import Any

from livar_bench.data.partitioners.base import Partitioner, build
from livar_bench.data.partitioners.registry import get_partitioner
from livar_bench.errors import BenchError

_SPECIAL = set(',[]="\\') | {" ", "\t"}


def parse_partition(text: str) -> Partitioner:
    """The validated partitioner of ``text`` (one ``BenchError`` naming the scheme and setting otherwise)."""
    name, raw = tokenise(text)
    cls = get_partitioner(name)
    fields = cls.model_fields
    unknown = [k for k in raw if k not in fields]
    if unknown:
        valid = ", ".join(fields) or "none"
        raise BenchError(f"partition {cls.name} has no setting {unknown[0]!r}; valid: {valid}")
    return build(cls, **raw)


def render(part: Partitioner, alpha: bool = True) -> str:
    """Canonical text of ``part`` (without its alpha when ``alpha`` is False)."""
    items = []
    for key in sorted(type(part).model_fields):
        value = getattr(part, key)
        if key == "alpha" and not (alpha and part.uses_alpha()):
            continue
        if value != type(part).model_fields[key].default:
            items.append(f"{key}={render_value(value)}")
    return f"{part.name}[{','.join(items)}]" if items else part.name


def describe(part: Partitioner) -> str:
    """``part`` with every setting it uses spelled out, defaults included (titles and messages)."""
    items = [f"{k}={render_value(getattr(part, k))}" for k in type(part).model_fields
             if k != "alpha" or part.uses_alpha()]
    return f"{part.name}[{','.join(items)}]" if items else part.name


def field_form(part: Partitioner) -> str:
    """What ``RunSpec.partition`` holds: the canonical text without the Dirichlet alpha."""
    return render(part, alpha=False)


def with_alpha(text: str, alpha: float) -> Partitioner:
    """The partitioner of a ``RunSpec.partition`` string and the run's alpha (used only if it reads one)."""
    part = parse_partition(text)
    if part.uses_alpha():
        part = build(type(part), **{**part.model_dump(exclude_unset=True), "alpha": alpha})
    return part


def split_alpha(text: str) -> tuple[str, float | None]:
    """(``RunSpec.partition`` form, the alpha written in ``text`` or None) of a user's partition spec."""
    part = parse_partition(text)
    written = part.alpha if "alpha" in part.model_fields_set else None  # type: ignore[attr-defined]
    return field_form(part), written


def render_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return json.dumps(text) if not text or any(c in _SPECIAL for c in text) else text


def tokenise(text: str, what: str = "partition spec",
             example: str = "--partition iid or --partition \"dirichlet[alpha=0.1]\"") -> tuple[str, dict[str, Any]]:
    """(lower-cased name, {lower-cased key: raw value}) of ``name[k=v,...]``, with clear errors (``what``
    and ``example`` name the kind of spec in them; other one-part specs, e.g. ``--local-work``, use it too)."""
    if not isinstance(text, str) or not text.strip():
        raise BenchError(f"empty {what}; give e.g. {example}")
    s = text.strip()
    where = f"{what} {text!r}"
    bracket = s.find("[")
    name = (s if bracket < 0 else s[:bracket]).strip()
    if not name or any(c in _SPECIAL for c in name):
        raise BenchError(f"{where}: expected a scheme name, then optionally [key=value,...], e.g. shards[per_client=2]")
    args: dict[str, Any] = {}
    if bracket < 0:
        return name.lower(), args
    if not s.endswith("]"):
        raise BenchError(f"{where}: '[' is never closed; write {name}[key=value,...]")
    body, pos = s[bracket + 1:-1], 0
    while pos < len(body):
        eq = body.find("=", pos)
        if eq < 0:
            raise BenchError(f"{where}: expected key=value inside {name}[...]")
        key = body[pos:eq].strip().lower()
        if not key or any(c in _SPECIAL for c in key):
            raise BenchError(f"{where}: expected key=value inside {name}[...]")
        rest = body[eq + 1:].lstrip()
        if rest.startswith('"'):
            try:
                value, used = json.JSONDecoder().raw_decode(rest)
            except ValueError:
                raise BenchError(f"{where}: the quoted value of {key} is never closed") from None
            after = rest[used:].lstrip()
        else:
            comma = rest.find(",")
            value, after = (rest.strip(), "") if comma < 0 else (rest[:comma].strip(), rest[comma:])
            if any(c in _SPECIAL for c in value) or not value:
                raise BenchError(f"{where}: the value of {key} needs double quotes (or is empty)")
        if key in args:
            raise BenchError(f"{where}: {key} is given twice")
        args[key] = value
        if after and not after.startswith(","):
            raise BenchError(f"{where}: expected ',' after {key}=...")
        pos = len(body) - len(after) + (1 if after else 0)
    return name.lower(), args
