"""A scripted stand-in for ``numpy.random.Generator``: partitioners take their randomness explicitly, so a
hand-computed case can say exactly what each draw returned and check what was asked for."""

from __future__ import annotations

from typing import Any

import numpy as np


class Scripted:
    """Answers each call with the next scripted (method, expected arguments check, value); any other call,
    or a call out of order, fails the test."""

    def __init__(self, *script: tuple[str, Any]) -> None:
        self.script = list(script)
        self.calls: list[tuple[str, tuple, dict]] = []

    def _next(self, method: str, args: tuple, kwargs: dict) -> Any:
        self.calls.append((method, args, kwargs))
        assert self.script, f"unscripted draw {method}{args}"
        name, value = self.script.pop(0)
        assert name == method, f"expected a {name} draw, got {method}{args}"
        return value(*args, **kwargs) if callable(value) else value

    def done(self) -> bool:
        return not self.script

    def __getattr__(self, method: str) -> Any:
        if method not in ("permutation", "dirichlet", "choice", "pareto", "lognormal"):
            raise AttributeError(method)
        return lambda *args, **kwargs: self._next(method, args, kwargs)


def arr(*values: float) -> np.ndarray:
    return np.asarray(values)
