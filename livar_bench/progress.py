"""Progress display helpers: rich bars on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def interactive() -> bool:
    return sys.stderr.isatty()


def track(items: Iterable[T], total: int | None = None, description: str = "working") -> Iterator[T]:
    """Iterate with a rich progress bar when stderr is a terminal; silently otherwise."""
    if not interactive():
        yield from items
        return
    from rich.progress import track as rich_track

    yield from rich_track(items, total=total, description=description, transient=True)
