"""What every tracker gets and does: the run's identity, its settings and tags, one call per logged step.

A tracker mirrors a run into a tool researchers already use; the results folder stays the source of
truth. The hub (``hub.py``) turns the round loop's events into these calls, on a thread of the tracker's
own, so a slow or failing tracker never holds up or stops a run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# run statuses a tracker run ends with
FINISHED, FAILED, KILLED = "finished", "failed", "killed"


@dataclass(frozen=True)
class RunInfo:
    """One run as a tracker sees it.

    Attributes:
        run_id: the run's id (its folder is ``<out>/runs/<run_id>``).
        name: a readable name: method, dataset, alpha, seed.
        slug: the name as a file name (TensorBoard run folders).
        group: the sweep the run belongs to (None for ``livar-bench run``).
        settings: the fully resolved settings as recorded in spec.json (with the weights' identity).
        tags: run id, partition id, weights hash, git sha, versions, engine, sweep.
        out: the results folder.
    """

    run_id: str
    name: str
    slug: str
    group: str | None
    settings: dict[str, Any]
    tags: dict[str, str]
    out: Path
    env: dict[str, Any] = field(default_factory=dict)


class Tracker(Protocol):
    """One tracker run per livar-bench run; every method may raise (the hub turns that into a warning)."""

    def open(self, run: RunInfo, previous: dict[str, Any] | None, save: Callable[[dict[str, Any]], None]) -> None:
        """Start a tracker run, or continue ``previous`` (what this tracker saved for the run, when that
        tracker run did not finish). ``save`` records what a later process needs to continue it; call it
        before creating anything that a crash could leave behind unnamed."""
        ...

    def last_step(self) -> int:
        """The last round this tracker run already holds (-1: none), so a resumed run logs no round twice."""
        ...

    def log(self, step: int, values: Mapping[str, float]) -> None:
        """Log one round's values (``<split>/<metric>``) at step = round; durable when it returns where
        the tool allows."""
        ...

    def finish(self, status: str, files: Iterable[Path]) -> None:
        """End the tracker run with ``status`` (finished, failed, killed), attaching ``files``."""
        ...


def run_info(spec: Any, settings: dict[str, Any], env: dict[str, Any], group: str | None, out: Path) -> RunInfo:
    """The RunInfo of a run from its spec and its spec.json / env.json records."""
    name = f"{spec.method} {spec.dataset} α={spec.alpha:g} seed {spec.seed}"
    slug = re.sub(r"[^A-Za-z0-9._+=-]+", "_", f"{spec.dataset}-a{spec.alpha:g}-s{spec.seed}-{spec.method}")
    tags = {
        "run_id": spec.run_id,
        "partition_id": spec.partition_id,
        "weights_sha256": str(settings.get("weights_sha256") or "none"),
        "method": spec.method,
        "dataset": spec.dataset,
        "git_sha": str(env.get("git_sha") or "unknown"),
        "livar_bench": str(env.get("livar_bench", "")),
        "torch": str(env.get("torch", "")),
        "engine": str(env.get("engine", "local")),
    }
    if group:
        tags["sweep"] = group
    return RunInfo(spec.run_id, name, f"{slug[:80]}-{spec.run_id}", group, dict(settings), tags, Path(out), dict(env))


def by_round(rows: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, float]]:
    """Tidy rows -> {round: {"<split>/<metric>": value}} (every split: test, val, test_local, test_heldout,
    privacy, train, cost). Rows of one client (split ``clients``, with a ``client`` number) are left out: one
    series per client and metric would bury the run's own curves; they stay in metrics.csv."""
    steps: dict[int, dict[str, float]] = {}
    for row in rows:
        client = row.get("client")
        if client is not None and client == client:  # NaN (a frame's empty cell) is not a client
            continue
        steps.setdefault(int(row["round"]), {})[f"{row['split']}/{row['metric']}"] = float(row["value"])
    return dict(sorted(steps.items()))


def flat(settings: Mapping[str, Any]) -> dict[str, str | int | float | bool]:
    """Settings as scalars (lists and None as text), for tools that take only scalar parameters."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in sorted(settings.items()):
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif isinstance(value, (list, tuple)):
            out[key] = ",".join(map(str, value))
        else:
            out[key] = "none" if value is None else str(value)
    return out


def accuracy_plot(history: Mapping[int, Mapping[str, float]], name: str, path: Path) -> Path:
    """A PNG of test accuracy and loss per round of one run (matplotlib's object API: no pyplot state, so
    tracker threads can draw at once)."""
    from matplotlib.figure import Figure

    rounds = [r for r, v in history.items() if "test/acc" in v]
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    ax.plot(rounds, [100 * history[r]["test/acc"] for r in rounds], marker="o", ms=3, label="test accuracy (%)")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(name, fontsize=9)
    ax.grid(alpha=0.3)
    right = ax.twinx()
    right.plot(rounds, [history[r].get("test/loss", float("nan")) for r in rounds], color="tab:red", ls="--",
               label="test loss")
    right.set_ylabel("test loss")
    fig.legend(loc="lower center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path
