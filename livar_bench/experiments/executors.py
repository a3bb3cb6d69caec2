"""Executors: run a list of RunSpecs, locally in sequence or as Ray tasks (one per GPU or CPU slot); the
Slurm executor is in ``slurm.py``, what all three share in ``common.py``; ``get_executor`` picks one.

All rely on ``run_federation`` for the bookkeeping that makes sweeps safe to repeat: runs already DONE
are skipped, interrupted runs resume from their last round, and a per-run lock keeps two processes
(two sweeps on one folder, or two Ray workers) off the same run.

Events sent to ``on_event`` (all keyword arguments):

    sweep_start  total, done            before the first run; ``done`` = runs already finished
    run_start    index, total, spec     before each run that is not yet done
    <run events> round, client, ...     forwarded from run_federation (local executor only)
    run_end      index, total, outcome  after each run (``outcome.skipped`` when done before or locked)
    run_failed   index, total, spec, error   a run stopped with a user-facing error (e.g. diverged)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from livar_bench.config import RunSpec
from livar_bench.errors import BenchError, DataNotFoundError, DiskFullError, WeightsError
from livar_bench.experiments.common import Event, Round1Files, SweepResult, bundle_key, quiet, sweep_signals
from livar_bench.experiments.trackers import TrackerConfig, Trackers, fan_out
from livar_bench.federation import RunOutcome, load_run_dataset, run_federation
from livar_bench.resources import configure_threads
from livar_bench.store import RunStore, sweep_temp_files

__all__ = ["Event", "Executor", "LocalExecutor", "RayExecutor", "SweepResult", "get_executor", "quiet",
           "sweep_signals"]


class Executor(Protocol):
    """Runs RunSpecs into a results folder."""

    def run(self, specs: list[RunSpec], out: str | Path, on_event: Event | None = None) -> SweepResult: ...


@dataclass(frozen=True)
class LocalExecutor:
    """Runs one spec after another in this process, reusing the loaded dataset between runs.

    Attributes:
        keep_going: on a run's ``BenchError`` (e.g. divergence) record it and continue with the next run;
            missing data or weights stop the sweep at once.
    """

    keep_going: bool = True
    share_round1: bool = True
    trackers: TrackerConfig | None = None

    def run(self, specs: list[RunSpec], out: str | Path, on_event: Event | None = None) -> SweepResult:
        with Trackers(self.trackers or TrackerConfig(), out) as hub:
            return self._run(specs, out, fan_out(hub, on_event))

    def _run(self, specs: list[RunSpec], out: str | Path, emit: Event) -> SweepResult:
        store = RunStore(out)
        sweep_temp_files(out)  # what killed processes left behind
        configure_threads(workers=1)  # one run at a time uses this process's share of the cores
        signals = sweep_signals(specs)
        start = time.perf_counter()
        emit("sweep_start", total=len(specs), done=sum(store.is_done(s.run_id) for s in specs))
        outcomes: list[RunOutcome] = []
        failures: list[tuple[str, str]] = []
        cached: tuple[tuple, Any] | None = None  # one dataset in memory at a time (specs come grouped)
        round1 = Round1Files(out, specs) if self.share_round1 else None
        for index, spec in enumerate(specs):
            if round1 is not None:
                round1.release_before(index)
            if store.is_done(spec.run_id):
                outcome = run_federation(spec, out)  # returns at once, reading the stored metrics
                outcomes.append(outcome)
                emit("run_end", index=index, total=len(specs), outcome=outcome)
                continue
            emit("run_start", index=index, total=len(specs), spec=spec)
            try:
                key = bundle_key(spec)
                if cached is None or cached[0] != key:
                    cached = (key, load_run_dataset(spec))
                outcome = run_federation(spec, out, on_event=emit, bundle=cached[1],
                                         share_round1=self.share_round1, round1_signals=signals)
            except BenchError as err:
                if not self.keep_going or isinstance(err, (DataNotFoundError, WeightsError, DiskFullError)):
                    raise  # missing data or weights, or a full disk, fail every later run the same way: stop now
                failures.append((spec.run_id, str(err)))
                emit("run_failed", index=index, total=len(specs), spec=spec, error=str(err))
                continue
            except Exception as err:  # noqa: BLE001 (one broken run never stops the rest of the sweep)
                if not self.keep_going:
                    raise
                message = f"unexpected {type(err).__name__}: {err}"
                failures.append((spec.run_id, message))
                emit("run_failed", index=index, total=len(specs), spec=spec, error=message)
                continue
            outcomes.append(outcome)
            emit("run_end", index=index, total=len(specs), outcome=outcome)
        if round1 is not None:
            round1.release_before(len(specs))
        return SweepResult(tuple(outcomes), tuple(failures), time.perf_counter() - start)


RAY_HOW = "the Ray executor needs Ray: pip install 'livar-bench[ray]' (or use --executor local)"


def _ray_task(spec_json: dict[str, Any], out: str, signals: list[str], cpus: int = 1,
              trackers: TrackerConfig | None = None) -> tuple[RunOutcome | None, str | None]:
    """Body of one Ray task: run a spec, turning user errors into a message instead of a crash."""
    import os

    import torch

    from livar_bench.config import make_spec

    if torch.cuda.is_available():  # one task per GPU: the node's cores are shared by as many tasks
        configure_threads(workers=max(1, torch.cuda.device_count()))
    else:  # threads beyond the task's CPU slots would oversubscribe the host
        torch.set_num_threads(int(os.environ.get("LIVAR_BENCH_THREADS") or cpus))
    try:
        from livar_bench.methods import Signal

        shared = frozenset(Signal(v) for v in signals)
        spec = make_spec(spec_json)
        with Trackers(trackers or TrackerConfig(), out) as hub:  # the task's own trackers, on its own node
            try:
                return run_federation(spec, out, share_round1=True, round1_signals=shared, on_event=hub), None
            except Exception as err:
                hub("run_failed", spec=spec, error=str(err))
                raise
    except BenchError as err:
        return None, str(err)
    except Exception as err:  # noqa: BLE001 (one broken run never stops the rest of the sweep)
        return None, f"unexpected {type(err).__name__}: {err}"


@dataclass(frozen=True)
class RayExecutor:
    """One Ray task per run: ``num_gpus=1`` per task when CUDA is available, else one CPU slot.

    Attributes:
        address: Ray cluster address (None starts a local Ray instance).
        cpus_per_run: CPU slots a CPU-only run takes.
    """

    address: str | None = None
    cpus_per_run: int = 1
    trackers: TrackerConfig | None = None

    def run(self, specs: list[RunSpec], out: str | Path, on_event: Event | None = None) -> SweepResult:
        try:
            import ray
        except ImportError:
            raise BenchError(RAY_HOW) from None
        import torch

        emit = on_event or quiet
        store = RunStore(out)
        sweep_temp_files(out)
        start = time.perf_counter()
        emit("sweep_start", total=len(specs), done=sum(store.is_done(s.run_id) for s in specs))
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        gpus = 1 if torch.cuda.is_available() else 0
        signals = sorted(s.value for s in sweep_signals(specs))
        remote = ray.remote(num_gpus=gpus, num_cpus=0 if gpus else self.cpus_per_run)(_ray_task)
        pending = {}
        for index, spec in enumerate(specs):
            if not store.is_done(spec.run_id):
                emit("run_start", index=index, total=len(specs), spec=spec)
            # specs travel as JSON-safe dicts so workers rebuild (and revalidate) them
            # round 1 is shared through <out>/cache/round1 (atomic writes; concurrent runs of a cell may
            # both compute it, with identical results)
            pending[remote.remote(spec.model_dump(mode="json"), str(Path(out).resolve()), signals,
                                  self.cpus_per_run, self.trackers)] = (index, spec)
        outcomes: list[RunOutcome] = []
        failures: list[tuple[str, str]] = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            index, spec = pending.pop(ready[0])
            outcome, error = ray.get(ready[0])
            if outcome is None:
                failures.append((spec.run_id, error or "unknown error"))
                emit("run_failed", index=index, total=len(specs), spec=spec, error=error)
                continue
            outcomes.append(outcome)
            emit("run_end", index=index, total=len(specs), outcome=outcome)
        outcomes.sort(key=lambda o: [s.run_id for s in specs].index(o.run_id))
        return SweepResult(tuple(outcomes), tuple(failures), time.perf_counter() - start)


def get_executor(name: str, **options: Any) -> Executor:
    """``local``, ``ray`` or ``slurm``; Ray and submitit are imported only when their executor runs."""
    if name == "local":
        return LocalExecutor(**options)
    if name == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise BenchError(RAY_HOW)
        return RayExecutor(**options)
    if name == "slurm":
        from livar_bench.experiments.slurm import SLURM_HOW, SlurmExecutor

        try:
            import submitit  # noqa: F401
        except ImportError:
            raise BenchError(SLURM_HOW) from None
        executor = SlurmExecutor(**options)
        executor.options.check()
        return executor
    raise BenchError(f"unknown executor {name!r}; use --executor local, ray or slurm")
