"""Methods that describe themselves: ``@describe`` declares, next to the class, what a method is.

A method or stage is a frozen dataclass whose fields are its hyperparameters, each declared once with
its type, its range or choices and a one-line help text, and validated by pydantic::

    @describe("fedavgm", paper="https://arxiv.org/abs/1909.06335", label="FedAvgM", order=12,
              summary="FedAvg with server momentum.")
    class FedAvgM(Aggregator):
        eta: Annotated[float, Field(gt=0, description="server learning rate")] = 1.0

``describe`` records the paper, label, summary, table position and card of the class (read by the
registry, ``methods/__init__.py``, which registers it under ``name``) and makes it the validated
dataclass. A class that only shares hyperparameters with its subclasses (``FedOpt``) uses
``hyperparameters`` alone. Validation happens whenever an instance is built: a value outside its range is
a pydantic ``ValidationError`` (the registry turns it into one ``BenchError`` line naming the method,
the key, what is allowed and the help text); floats must be finite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pydantic.dataclasses
from pydantic import ConfigDict

T = TypeVar("T", bound=type)

# Unknown keys are errors; inf and nan are not numbers a hyperparameter can take.
CONFIG = ConfigDict(allow_inf_nan=False, extra="forbid")


@dataclass(frozen=True)
class Description:
    """What a method is, declared on its class by ``describe``.

    Attributes:
        name: the name it is registered under by default (spec strings, run ids, buffer namespaces).
        paper: link to the paper (an arXiv abs page), or "-" for none.
        summary: one line for ``ls methods``.
        label: display name in tables and plots (e.g. "LIVAR").
        order: position in tables (smaller first); baselines before the methods they are compared with.
        card: folder of its card, ``baselines/<card>/README.md`` (several methods may share one).
    """

    name: str
    paper: str
    summary: str
    label: str
    order: int
    card: str


def hyperparameters(cls: T) -> T:
    """Make ``cls`` a frozen, pydantic-validated dataclass whose fields are its hyperparameters.

    Every field must carry a one-line help text (``Field(description=...)``): it is what ``ls methods``,
    the cards and error messages show.
    """
    cls = pydantic.dataclasses.dataclass(frozen=True, config=CONFIG)(cls)
    silent = [name for name, info in cls.__pydantic_fields__.items() if not info.description]
    if silent:
        raise TypeError(f"{cls.__name__}: hyperparameters {', '.join(silent)} have no help text; declare each as "
                        f"Annotated[type, Field(..., description='one line of help')] = default")
    return cls


def describe(name: str, *, paper: str, summary: str, label: str | None = None, order: int = 1000,
             card: str | None = None) -> Callable[[T], T]:
    """Class decorator: ``hyperparameters`` plus the description the registry reads (see ``Description``)."""
    if not name.isidentifier() or name != name.lower():
        raise ValueError(f"method name {name!r} must be lower-case letters, digits and underscores")

    def wrap(cls: T) -> T:
        cls = hyperparameters(cls)
        cls.description = Description(name=name, paper=paper, summary=summary, label=label or name, order=order,
                                      card=card or name)
        return cls

    return wrap
