"""System heterogeneity: how much local work each sampled client does in a round, and who replies.

Real federations are not a row of identical devices: clients run different amounts of local work, some
(stragglers) finish only part of it, and some never answer. Per round and sampled client this module
decides, from the run seed alone (``seeding.STREAM_SYSTEM``, ``STREAM_SPEED``), how many local steps the
client takes and whether its update reaches the server:

- ``local_work``: ``fixed`` (default: ``--epochs`` full epochs for everyone), ``epochs[min=1,max=5]``
  (epochs drawn uniformly per client and round, as in FedNova's experiments), ``steps[min=10,max=50]``
  (local steps drawn uniformly per client and round; the batch schedule is cut after them).
- ``stragglers``: the fraction of each round's sampled clients (round(f * m) of them, drawn at random)
  that complete only ``straggler_work`` of their steps (at least one step), as FedProx's stragglers.
- ``dropout``: each sampled client fails to reply with this probability.
- ``deadline``: the server waits ``deadline`` step-times of a median-speed device; a client whose
  steps / speed exceed it does not reply. Speeds are LogNormal(0, SPEED_SIGMA), one per client, fixed
  over rounds (its device), so the same slow clients keep missing the deadline.

A client that will not reply is not trained: the simulation knows its update would not arrive, so its
work costs nothing (and the other clients' random streams do not depend on it). The aggregate sees only
the replies, each carrying the steps it actually took (``ClientUpdate.num_steps``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from livar_bench.errors import BenchError
from livar_bench.seeding import STREAM_SPEED, STREAM_SYSTEM, derive_seed

SPEED_SIGMA = 0.5  # spread of device speeds (log-normal sigma; median speed 1 step per time unit)


class Fixed(BaseModel):
    """Every client does ``--epochs`` full epochs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str] = "fixed"


class _Range(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str] = ""
    min: int = Field(1, ge=1, description="smallest draw")
    max: int = Field(5, ge=1, description="largest draw (inclusive)")

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be at least min ({self.min})")
        return self


class Epochs(_Range):
    """Each client and round draws its local epochs uniformly from min..max."""

    name: ClassVar[str] = "epochs"


class Steps(_Range):
    """Each client and round draws its local steps uniformly from min..max."""

    name: ClassVar[str] = "steps"
    min: int = Field(10, ge=1, description="fewest local steps")
    max: int = Field(50, ge=1, description="most local steps (inclusive)")


WORK = {cls.name: cls for cls in (Fixed, Epochs, Steps)}


def parse_work(text: str) -> BaseModel:
    """The local-work model of ``text`` (one ``BenchError`` naming the setting otherwise)."""
    from livar_bench.data.partitioners.spec import tokenise

    name, raw = tokenise(text, "local work spec", '--local-work fixed or --local-work "epochs[min=1,max=5]"')
    if name not in WORK:
        raise BenchError(f"unknown local work {name!r}; use fixed, epochs[min=..,max=..] or steps[min=..,max=..]")
    try:
        return WORK[name](**raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or name}: {e['msg'].removeprefix('Value error, ')}"
                             for e in err.errors())
        raise BenchError(f"local work {name}: {problems}") from None


def render_work(work: BaseModel) -> str:
    """Canonical text: the name, and the settings when they are not the defaults."""
    items = [f"{k}={getattr(work, k)}" for k in sorted(type(work).model_fields)
             if getattr(work, k) != type(work).model_fields[k].default]
    return f"{work.name}[{','.join(items)}]" if items else work.name


@dataclass(frozen=True)
class SystemSettings:
    """A run's system heterogeneity (RunSpec fields of the same names)."""

    local_work: str = "fixed"
    stragglers: float = 0.0
    straggler_work: float = 0.5
    dropout: float = 0.0
    deadline: float | None = None

    @property
    def active(self) -> bool:
        """Whether anything differs from every client doing its full work and replying."""
        return (self.local_work != "fixed" or self.stragglers > 0 or self.dropout > 0
                or self.deadline is not None)


@dataclass(frozen=True)
class ClientPlan:
    """One sampled client's round: the steps it takes and whether its update arrives."""

    steps: int  # local steps it takes (after straggling)
    full: int  # its full work this round, in steps
    straggler: bool
    replies: bool
    reason: str | None = None  # "dropout" or "deadline" when it does not reply
    time: float | None = None  # simulated duration (steps / speed) when a deadline is set


def speed(seed: int, client: int) -> float:
    """Client ``client``'s device speed (steps per time unit; median 1)."""
    return float(np.random.default_rng(derive_seed(seed, STREAM_SPEED, client)).lognormal(0.0, SPEED_SIGMA))


def plan_round(system: SystemSettings, seed: int, round_: int, sizes: Mapping[int, int], epochs: int,
               batch_size: int) -> dict[int, ClientPlan]:
    """The plan of each sampled client (``sizes``: client id -> its number of training samples)."""
    work = parse_work(system.local_work)
    clients = sorted(sizes)
    count = int(round(system.stragglers * len(clients)))
    chooser = np.random.default_rng(derive_seed(seed, STREAM_SYSTEM, round_))
    slow = {clients[i] for i in chooser.choice(len(clients), size=count, replace=False)} if count else set()
    out = {}
    for k in clients:
        rng = np.random.default_rng(derive_seed(seed, STREAM_SYSTEM, round_, k))
        per_epoch = -(-sizes[k] // batch_size)
        if isinstance(work, Epochs):
            full = int(rng.integers(work.min, work.max + 1)) * per_epoch
        elif isinstance(work, Steps):
            full = int(rng.integers(work.min, work.max + 1))
        else:
            full = epochs * per_epoch
        steps = max(1, int(np.floor(system.straggler_work * full))) if k in slow else full
        dropped = bool(rng.random() < system.dropout)
        time = steps / speed(seed, k) if system.deadline is not None else None
        late = time is not None and time > system.deadline
        reason = "dropout" if dropped else "deadline" if late else None
        out[k] = ClientPlan(steps, full, k in slow, reason is None, reason, time)
    return out


def replying(clients: list[int], plan: dict[int, ClientPlan] | None) -> tuple[list[int], dict[int, int] | None]:
    """(the clients that will reply, their local-step budgets or None): a client that will not reply is not
    trained at all."""
    if plan is None:
        return clients, None
    todo = [k for k in clients if plan[k].replies]
    return todo, {k: plan[k].steps for k in todo}
