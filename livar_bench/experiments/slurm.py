"""The Slurm executor: a sweep's runs as Slurm jobs through submitit, one job per run or per group of runs.

Each job runs its runs one after another with ``run_federation`` (sharing round 1 through
``<out>/cache/round1`` like the other executors), so the bookkeeping that makes sweeps safe to repeat
holds on a cluster too: finished runs are skipped, an interrupted run resumes from its last round, and
the per-run lock keeps two jobs off one run (on a results folder shared by several nodes set
``LIVAR_BENCH_LOCKS=lease``, store/locks.py). On preemption or when a job reaches its time limit, Slurm
signals it first; submitit then requeues the job (``SlurmJob.checkpoint``), and the requeued job resumes
its run from the last round's checkpoint.

``cluster="local"`` runs the same jobs as processes on this machine through submitit's local executor:
a way to try a sweep's job set-up (and the tests' way) without a cluster. Job logs and submitit's files
are under ``<out>/slurm/<job id>/``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livar_bench.config import RunSpec
from livar_bench.errors import BenchError
from livar_bench.experiments.common import Event, Round1Files, SweepResult, bundle_key, quiet, sweep_signals
from livar_bench.experiments.trackers import TrackerConfig
from livar_bench.store import RunStore, sweep_temp_files

SLURM_HOW = "the Slurm executor needs submitit: pip install 'livar-bench[slurm]' (or use --executor local)"
CLUSTERS = ("slurm", "local")
# Slurm job states of a job ended from outside (sacct); a requeued or preempted job is not done yet
KILLED_STATES = frozenset({"OUT_OF_MEMORY", "NODE_FAIL", "CANCELLED", "BOOT_FAIL", "DEADLINE", "TIMEOUT"})


@dataclass(frozen=True)
class SlurmOptions:
    """What each job asks Slurm for, and how runs are packed into jobs.

    Attributes:
        partition: Slurm partition (None: the cluster's default).
        time_min: time limit of one job in minutes (a job that reaches it is requeued and resumes).
        gpus: GPUs per job.
        cpus: CPU cores per job.
        mem_gb: memory per job in GB (None: the partition's default).
        array: at most this many jobs at once (0: no limit).
        runs_per_job: consecutive runs of the sweep in one job (methods of one partition come together).
        setup: shell lines run before each job (e.g. ``module load cuda``, ``source .venv/bin/activate``).
        extra: further sbatch settings, e.g. {"account": "abc", "qos": "high"}.
        cluster: slurm, or local (the jobs as processes on this machine).
    """

    partition: str | None = None
    time_min: int = 240
    gpus: int = 0
    cpus: int = 4
    mem_gb: float | None = None
    array: int = 0
    runs_per_job: int = 1
    setup: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)
    cluster: str = "slurm"

    def check(self) -> None:
        """Raises BenchError on settings Slurm would refuse later (or the cluster tool is missing)."""
        if self.cluster not in CLUSTERS:
            raise BenchError(f"unknown --slurm-cluster {self.cluster!r}; use slurm or local")
        for name, value, low in (("--slurm-time", self.time_min, 1), ("--slurm-cpus", self.cpus, 1),
                                 ("--slurm-gpus", self.gpus, 0), ("--slurm-array", self.array, 0),
                                 ("--runs-per-job", self.runs_per_job, 1)):
            if value < low:
                raise BenchError(f"{name} {value}: give a whole number of at least {low}")
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise BenchError("sbatch not found: run the sweep on the cluster's login node (or add "
                             "--slurm-cluster local to try the jobs as processes on this machine)")

    def parameters(self) -> dict[str, Any]:
        """submitit's AutoExecutor parameters."""
        params: dict[str, Any] = {"name": "livar-bench", "timeout_min": self.time_min, "cpus_per_task": self.cpus,
                                  "gpus_per_node": self.gpus, "tasks_per_node": 1, "nodes": 1}
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if self.cluster == "slurm":
            params.update(slurm_array_parallelism=self.array or 256, slurm_setup=list(self.setup),
                          slurm_additional_parameters=dict(self.extra))
            if self.partition:
                params["slurm_partition"] = self.partition
        elif self.setup:
            params["local_setup"] = list(self.setup)
        return params


def _job_log(event: str, **info: Any) -> None:
    """Plain progress lines in the job's log (``<out>/slurm/<job id>/<job id>_0_log.err``)."""
    import sys

    if event == "start":
        spec = info["spec"]
        print(f"run {spec.run_id} ({spec.method} {spec.dataset} alpha={spec.alpha:g} seed {spec.seed}): "
              f"rounds {info['start_round']}..{info['rounds']}", file=sys.stderr, flush=True)
    elif event == "resume":
        print(f"run {info['run_id']}: resuming after round {info['round']}", file=sys.stderr, flush=True)
    elif event == "round":
        print(f"  round {info['round']}: acc {info['metrics'].get('acc', float('nan')):.4f}", file=sys.stderr, flush=True)
    elif event == "warning":
        print(f"warning: {info['message']}", file=sys.stderr, flush=True)


class SlurmJob:
    """The body of one job (a module-level class, so it pickles): run each spec, report each outcome.

    ``checkpoint`` makes the job requeueable: submitit calls it when Slurm signals preemption or the
    time limit, and requeues the same call; the runs then resume from their checkpoints.
    """

    def __call__(self, specs: list[dict[str, Any]], out: str, signals: list[str],
                 trackers: TrackerConfig | None) -> list[tuple[str, Any, str | None]]:
        from livar_bench.config import make_spec
        from livar_bench.errors import DataNotFoundError, DiskFullError, WeightsError
        from livar_bench.experiments.trackers import Trackers, fan_out
        from livar_bench.federation import load_run_dataset, run_federation
        from livar_bench.methods import Signal
        from livar_bench.resources import configure_threads

        configure_threads(workers=1)  # the job's cores (Slurm's affinity mask) for its one run at a time
        shared = frozenset(Signal(v) for v in signals)
        results: list[tuple[str, Any, str | None]] = []
        cached: tuple[tuple, Any] | None = None
        with Trackers(trackers, out) if trackers and trackers.names else nullcontext() as hub:
            emit = fan_out(hub, _job_log)
            for data in specs:
                spec = make_spec(data)
                try:
                    key = bundle_key(spec)
                    if cached is None or cached[0] != key:
                        cached = (key, load_run_dataset(spec))
                    outcome = run_federation(spec, out, on_event=emit, bundle=cached[1], share_round1=True,
                                             round1_signals=shared)
                    results.append((spec.run_id, outcome, None))
                except (DataNotFoundError, WeightsError, DiskFullError):
                    raise  # every later run would fail the same way
                except BenchError as err:
                    results.append((spec.run_id, None, str(err)))
                    emit("run_failed", spec=spec, error=str(err))
                except Exception as err:  # noqa: BLE001 (one broken run never stops the rest of the job)
                    results.append((spec.run_id, None, f"unexpected {type(err).__name__}: {err}"))
                    emit("run_failed", spec=spec, error=str(err))
        return results

    def checkpoint(self, *args: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args)


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclass(frozen=True)
class SlurmExecutor:
    """Submits the sweep's unfinished runs as jobs, waits for them, and collects their outcomes.

    Attributes:
        options: what each job asks for (SlurmOptions).
        trackers: trackers each job logs its runs to (opened inside the job).
        poll_s: seconds between looks at the jobs' states.
    """

    options: SlurmOptions = field(default_factory=SlurmOptions)
    trackers: TrackerConfig | None = None
    poll_s: float | None = None

    def run(self, specs: list[RunSpec], out: str | Path, on_event: Event | None = None) -> SweepResult:
        try:
            import submitit
        except ImportError:
            raise BenchError(SLURM_HOW) from None
        self.options.check()
        emit = on_event or quiet
        store = RunStore(out)
        sweep_temp_files(out)
        start = time.perf_counter()
        emit("sweep_start", total=len(specs), done=sum(store.is_done(s.run_id) for s in specs))
        index = {s.run_id: i for i, s in enumerate(specs)}
        outcomes: dict[str, Any] = {}
        for spec in specs:
            if store.is_done(spec.run_id):
                from livar_bench.federation import run_federation

                outcomes[spec.run_id] = run_federation(spec, out)  # returns at once, with the stored metrics
                emit("run_end", index=index[spec.run_id], total=len(specs), outcome=outcomes[spec.run_id])
        todo = [s for s in specs if s.run_id not in outcomes]
        failures: list[tuple[str, str]] = []
        if todo:
            folder = Path(out).resolve() / "slurm" / "%j"
            executor = submitit.AutoExecutor(folder=str(folder), cluster=self.options.cluster)
            executor.update_parameters(**self.options.parameters())
            signals = sorted(s.value for s in sweep_signals(specs))
            groups = list(_chunks(todo, self.options.runs_per_job))
            args = [([s.model_dump(mode="json") for s in g], str(Path(out).resolve()), signals, self.trackers)
                    for g in groups]
            for g in groups:
                for s in g:
                    emit("run_start", index=index[s.run_id], total=len(specs), spec=s)
            self._wait(executor, groups, args, specs, index, outcomes, failures, emit)
        if not failures:
            Round1Files(out, specs).release_before(len(specs))  # every cell is done: its round-1 files go
        done = tuple(outcomes[s.run_id] for s in specs if s.run_id in outcomes)
        return SweepResult(done, tuple(failures), time.perf_counter() - start)

    def _wait(self, executor: Any, groups: list[list[RunSpec]], args: list[tuple], specs: list[RunSpec],
              index: dict[str, int], outcomes: dict[str, Any], failures: list[tuple[str, str]], emit: Event) -> None:
        """Submit (at most ``array`` jobs at once on the local cluster; Slurm throttles an array itself) and
        collect each job as it ends."""
        poll = self.poll_s if self.poll_s is not None else (1.0 if self.options.cluster == "local" else 15.0)
        job = SlurmJob()
        if self.options.cluster == "slurm":
            jobs = executor.map_array(job, *zip(*args, strict=True))
            pending = list(zip(jobs, groups, strict=True))
            waiting: list[tuple[tuple, list[RunSpec]]] = []
        else:
            waiting = list(zip(args, groups, strict=True))
            pending = []
        while pending or waiting:
            while waiting and len(pending) < (self.options.array or len(groups)):
                a, g = waiting.pop(0)
                pending.append((executor.submit(job, *a), g))
            for item in [p for p in pending if p[0].done()]:
                pending.remove(item)
                self._collect(*item, specs, index, outcomes, failures, emit)
            if pending:
                time.sleep(poll)

    @staticmethod
    def _collect(job: Any, group: list[RunSpec], specs: list[RunSpec], index: dict[str, int],
                 outcomes: dict[str, Any], failures: list[tuple[str, str]], emit: Event) -> None:
        log = Path(str(job.paths.stderr))
        why = f"job {job.job_id} ended without finishing its run(s) (killed, out of memory or past its time?); " \
              f"see {log}"
        state = str(job.state).split(" ")[0]
        if state in KILLED_STATES and not job.paths.result_pickle.exists():
            # Slurm ended the job from outside: no result will come, so do not wait for one (submitit
            # waits 15 s per job for a result file on a slow shared filesystem)
            results = [(s.run_id, None, f"{why} (Slurm state {state})") for s in group]
        else:
            try:
                results = job.result()
            except Exception as err:  # noqa: BLE001 (submitit raises its own errors for a job that died)
                if "Traceback" not in str(err) and str(err).strip():
                    why += f" ({' '.join(str(err).split())[:200]})"
                results = [(s.run_id, None, why) for s in group]
        for run_id, outcome, error in results:
            spec = specs[index[run_id]]
            if outcome is None:
                failures.append((run_id, error or "unknown error"))
                emit("run_failed", index=index[run_id], total=len(specs), spec=spec, error=error)
            else:
                outcomes[run_id] = outcome
                emit("run_end", index=index[run_id], total=len(specs), outcome=outcome)


