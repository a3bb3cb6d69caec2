"""The tracker hub: round-loop events in, tracker calls out, on one thread per tracker.

    start  (run_federation)   open or continue the tracker run; log the rounds it does not hold yet
    round  (run_federation)   log the round's rows (every split: test, val, test_local, train, cost)
    done   (run_federation)   attach the run's records and a plot, end the tracker run as finished
    run_failed (executor)     end it as failed; an exception through the hub's ``with`` ends it as killed

Why threads: a tracker talks to files, a local database or a server that may be slow or gone (MLflow's
client retries an unreachable server for minutes). The round loop only puts calls on a queue. The first
exception in a tracker is one ``warning:`` line, and that tracker stops for the rest of the process;
the results folder never depends on it.

Continuing a run: what a tracker needs to find its run again (MLflow run id, W&B run id, TensorBoard
folder) is kept in ``<out>/trackers/<tracker>/<run_id>.json`` with ``finished: false`` until the run
ends. A resumed run (a rerun after a crash, kill -9 or preemption) reopens that tracker run and logs the
rounds it lacks, from the history the round loop hands over, so each round is there once.
"""

from __future__ import annotations

import importlib
import json
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livar_bench.errors import BenchError, warn
from livar_bench.experiments.trackers.base import (
    FAILED,
    FINISHED,
    KILLED,
    RunInfo,
    Tracker,
    accuracy_plot,
    by_round,
    run_info,
)

# name -> (module, class, extra); modules are imported on a tracker's own thread, when its first run opens
TRACKERS: dict[str, tuple[str, str, str]] = {
    "tensorboard": ("livar_bench.experiments.trackers.tensorboard", "TensorBoardTracker", "tensorboard"),
    "mlflow": ("livar_bench.experiments.trackers.mlflow", "MLflowTracker", "mlflow"),
    "wandb": ("livar_bench.experiments.trackers.wandb", "WandbTracker", "wandb"),
}
RUN_FILES = ("spec.json", "env.json", "partition.json", "metrics.csv")
# how long the end of a run waits for a tracker to finish writing (after Ctrl-C: less)
WAIT_S = float(os.environ.get("LIVAR_BENCH_TRACKER_WAIT_S", "120"))
INTERRUPT_WAIT_S = 30.0


def check_trackers(names: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Validated tracker names in the order given (each once).

    Raises:
        BenchError: an unknown name.
    """
    seen: dict[str, None] = {}
    for name in names or ():
        key = name.strip().lower()
        if key not in TRACKERS:
            raise BenchError(f"unknown tracker {name!r}; use --tracker {', --tracker '.join(TRACKERS)} (repeatable)")
        seen[key] = None
    return tuple(seen)


@dataclass(frozen=True)
class TrackerConfig:
    """Which trackers a command logs to and the sweep its runs belong to (picklable: travels to Ray tasks
    and Slurm jobs, where each process opens its own hub)."""

    names: tuple[str, ...] = ()
    group: str | None = None


def ledger_path(out: Path, tracker: str, run_id: str) -> Path:
    return Path(out) / "trackers" / tracker / f"{run_id}.json"


class _Lane:
    """One tracker's thread. Calls run in order; after the first failure the lane only drops work."""

    def __init__(self, name: str, out: Path) -> None:
        self.name, self.out = name, out
        self.failed = False
        self.tracker: Tracker | None = None
        self.history: dict[int, dict[str, float]] = {}
        self.run: RunInfo | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=f"livar-bench-{name}", daemon=True)
        self._thread.start()

    def put(self, fn: Callable[..., None], *args: Any) -> None:
        if not self.failed:
            self._queue.put((fn, args))

    def drain(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until the calls queued so far have run; whether they did. A lane
        that did not is given up: one warning, and it drops all later work."""
        if self.failed:
            return True
        done = threading.Event()
        self._queue.put((done.set, ()))
        if done.wait(timeout):
            return True
        self._fail(f"still writing after {timeout:.0f} s; left behind, so its last rounds may be missing there")
        return False

    def close(self, timeout: float) -> None:
        """Stop the thread once its queued calls have run, waiting at most ``timeout`` s for it (a lane
        that was given up as stuck is not waited for: it drops its work and ends when its call returns)."""
        self._queue.put(None)
        self._thread.join(0 if self.failed else timeout)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args = item
            if self.failed and not isinstance(getattr(fn, "__self__", None), threading.Event):
                continue
            try:
                fn(*args)
            except ImportError as err:
                self._fail(f"needs {err.name or TRACKERS[self.name][2]}: pip install 'livar-bench[{TRACKERS[self.name][2]}]'")
            except Exception as err:  # noqa: BLE001 (a tracker never stops a run: any failure is one warning)
                self._fail(f"{type(err).__name__}: {' '.join(str(err).split())[:300]}")

    def _fail(self, why: str) -> None:
        if self.failed:  # a lane left behind whose stuck call failed later: it was already reported
            return
        self.failed, self.tracker = True, None
        warn(f"{self.name} tracker stopped ({why}); runs go on and the results folder holds every number")

    # --- the calls, on the lane's thread -------------------------------------------------------------

    def open(self, run: RunInfo, history: dict[int, dict[str, float]]) -> None:
        module, cls, _ = TRACKERS[self.name]
        factory = getattr(importlib.import_module(module), cls)
        path = ledger_path(self.out, self.name, run.run_id)
        previous = _read_ledger(path)
        tracker = factory()
        tracker.open(run, previous if previous and not previous.get("finished") else None,
                     lambda entry: _write_ledger(path, {**entry, "finished": False}))
        if self.failed:  # given up while it was opening: nothing more goes to it
            return
        self.tracker, self.run, self.history = tracker, run, dict(history)
        last = tracker.last_step()
        for step, values in history.items():
            if step > last:
                tracker.log(step, values)

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.tracker is not None:
            self.tracker.log(step, values)
            self.history[step] = values

    def finish(self, status: str) -> None:
        tracker, run = self.tracker, self.run
        if tracker is None or run is None:
            return
        self.tracker = None
        with tempfile.TemporaryDirectory(prefix="livar-bench-tracker-") as tmp:
            files: list[Path] = []
            if status == FINISHED:
                folder = run.out / "runs" / run.run_id
                files = [folder / f for f in RUN_FILES if (folder / f).is_file()]
            if any("test/acc" in v for v in self.history.values()):
                files.append(accuracy_plot(self.history, run.name, Path(tmp) / "accuracy_per_round.png"))
            tracker.finish(status, files)
        if status == FINISHED:
            path = ledger_path(self.out, self.name, run.run_id)
            _write_ledger(path, {**(_read_ledger(path) or {}), "finished": True})


def _read_ledger(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_ledger(path: Path, data: dict[str, Any]) -> None:
    from livar_bench.store import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data)


class Trackers:
    """Event consumer that mirrors every run it sees into the configured trackers (a context manager:
    leaving it ends an open tracker run and waits, boundedly, for the trackers to finish writing)."""

    def __init__(self, config: TrackerConfig, out: str | Path) -> None:
        self.config, self.out = config, Path(out)
        self.lanes = [_Lane(name, self.out) for name in config.names]
        self.current: str | None = None

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        interrupted = kind is not None and not issubclass(kind, Exception)  # Ctrl-C, a kill signal's exit
        if self.current is not None:
            self._end(KILLED if interrupted else FAILED, INTERRUPT_WAIT_S if interrupted else WAIT_S)
        deadline = time.monotonic() + (INTERRUPT_WAIT_S if interrupted else WAIT_S)
        for lane in self.lanes:  # no tracker thread outlives the command, except one given up as stuck
            lane.close(max(1.0, deadline - time.monotonic()))

    def _end(self, status: str, wait: float) -> None:
        """End the open tracker runs and wait for the trackers to finish writing (each at most ``wait`` s),
        so that the next run starts with every tracker caught up."""
        self._each("finish", status)
        self.current = None
        deadline = time.monotonic() + wait
        for lane in self.lanes:
            lane.drain(max(1.0, deadline - time.monotonic()))

    def _each(self, call: str, *args: Any) -> None:
        for lane in self.lanes:
            lane.put(getattr(lane, call), *args)

    def __call__(self, event: str, **info: Any) -> None:
        if not self.lanes:
            return
        if event == "start":
            self._start(info["spec"], info.get("history") or [])
        elif event == "round" and self.current is not None:
            values = by_round(info.get("rows") or []).get(info["round"])
            if values:
                self._each("log", info["round"], values)
        elif event == "done" and self.current == info.get("run_id"):
            self._end(FINISHED, WAIT_S)
        elif event == "run_failed" and self.current == info["spec"].run_id:
            self._end(FAILED, WAIT_S)

    def _start(self, spec: Any, history: list[dict[str, Any]]) -> None:
        from livar_bench.store import RunStore

        if self.current is not None:  # a run that ended without done/run_failed (should not happen)
            self._end(FAILED, WAIT_S)
        folder = RunStore(self.out).partial_dir(spec.run_id)
        records = {}
        for name in ("spec", "env"):
            try:
                records[name] = json.loads((folder / f"{name}.json").read_text())
            except (OSError, ValueError):
                records[name] = {}
        run = run_info(spec, records["spec"], records["env"], self.config.group, self.out)
        self.current = spec.run_id
        self._each("open", run, by_round(history))


def fan_out(*handlers: Callable[..., None] | None) -> Callable[..., None]:
    """One event handler calling each of ``handlers`` in order (None entries skipped)."""
    chain = [h for h in handlers if h is not None]

    def emit(event: str, **info: Any) -> None:
        for handler in chain:
            handler(event, **info)

    return emit
