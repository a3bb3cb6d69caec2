"""``livar-bench sweep``: every combination of datasets x methods x alphas x seeds, resumable."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer

from livar_bench.cli import app
from livar_bench.cli import options as o
from livar_bench.cli.ui import console
from livar_bench.errors import BenchError


def _eta(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class SweepProgress:
    """Event handler for executors: one rich display (runs, current run's rounds and clients, ETA) on a
    terminal; one plain log line per run and per round otherwise."""

    def __init__(self, live: bool | None = None) -> None:
        self.live = sys.stderr.isatty() if live is None else live
        self.progress: Any = None
        self.runs_task = self.rounds_task = self.clients_task = None
        self.total = self.finished = 0
        self.trained_seconds: list[float] = []
        self.run_started = 0.0
        self.label = ""

    def __enter__(self) -> SweepProgress:
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("{task.fields[eta]}"), console=console,
                                     transient=True)
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def eta(self) -> str:
        """Remaining time from the mean duration of the runs trained so far."""
        if not self.trained_seconds:
            return "ETA --"
        left = self.total - self.finished
        return f"ETA {_eta(left * sum(self.trained_seconds) / len(self.trained_seconds))}"

    def log(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, highlight=False)
        else:
            console.print(text, highlight=False, soft_wrap=True)

    def __call__(self, event: str, **info: Any) -> None:
        p = self.progress
        if event == "sweep_start":
            self.total, self.finished = info["total"], info["done"]
            if p is not None:
                self.runs_task = p.add_task("runs", total=self.total, completed=self.finished, eta=self.eta())
            self.log(f"sweep: {self.total} runs, {self.finished} already done")
        elif event == "run_start":
            spec = info["spec"]
            self.run_started = time.perf_counter()
            self.label = f"[{info['index'] + 1}/{info['total']}] {spec.method} {spec.dataset} {_where(spec)} seed {spec.seed}"
            if p is None:
                self.log(f"{self.label}: start (run {spec.run_id})")
        elif event == "start" and p is not None:
            for task in (self.rounds_task, self.clients_task):
                if task is not None:
                    p.remove_task(task)
            self.rounds_task = p.add_task(f"  {self.label} rounds", total=info["rounds"],
                                          completed=info["start_round"] - 1, eta="")
            self.clients_task = p.add_task("    clients", total=info["clients"], eta="")
        elif event == "client" and p is not None and self.clients_task is not None:
            p.advance(self.clients_task)
        elif event == "round":
            m = info["metrics"]
            if p is not None and self.rounds_task is not None:
                p.advance(self.rounds_task)
                p.reset(self.clients_task)
            else:
                self.log(f"{self.label}: round {info['round']} acc {m.get('acc', float('nan')):.4f}")
        elif event == "resume":
            self.log(f"{self.label}: resuming after round {info['round']}")
        elif event == "warning":
            self.log(f"{self.label}: warning: {info['message']}")
        elif event == "locked":
            self.log(f"{self.label}: another process is running it; skipped")
        elif event == "warning":
            self.log(f"warning: {info['message']}")
        elif event == "run_end":
            outcome = info["outcome"]
            if not outcome.skipped:
                self.finished += 1
                self.trained_seconds.append(time.perf_counter() - self.run_started)
                acc = outcome.final.get("acc")
                self.log(f"{self.label}: done, acc {acc:.4f} ({self.eta()})" if acc is not None else f"{self.label}: done")
            if p is not None:
                p.update(self.runs_task, completed=self.finished, eta=self.eta())
        elif event == "run_failed":
            self.log(f"{self.label}: FAILED: {info['error']}")


def _where(spec: Any) -> str:
    """The partition of a run as the progress shows it: α for Dirichlet, the spec otherwise."""
    return f"α={spec.alpha:g}" if spec.partition == "dirichlet" else spec.partition_label


@app.command()
@o.run_options(skip=("dataset", "alpha", "seed"))
def sweep(
    config: Path | None = typer.Option(None, help="Sweep YAML (grid: lists, base: run settings); options override it."),
    # the singular spellings too, as a user who just ran `run` types them (one value is a one-value list)
    datasets: str | None = typer.Option(None, "--datasets", "--dataset",
                                        help="Comma-separated datasets, e.g. cifar100,imagenet-r."),
    methods: str | None = typer.Option(None, "--methods", "--method",
                                       help="Comma-separated method specs, e.g. livar,ccvr,livar+ccvr."),
    partitions: str | None = typer.Option(None, help="Comma-separated partition specs, e.g. "
                                          "iid,shards[per_client=2],classes[k=2] (a grid axis)."),
    alphas: str | None = typer.Option(None, "--alphas", "--alpha",
                                      help="Comma-separated Dirichlet alphas, e.g. 0.05,0.1,0.2."),
    seeds: str | None = typer.Option(None, "--seeds", "--seed", help="Comma-separated seeds, e.g. 0,1,2."),
    executor: str = typer.Option("local", help="local (one run after another), ray (one run per GPU/CPU slot) or "
                                 "slurm (Slurm jobs through submitit; pip install 'livar-bench[slurm]')."),
    ray_address: str | None = typer.Option(None, help="Ray cluster address (default: start Ray locally)."),
    out: Path = typer.Option(Path("results"), help="Results folder (runs go to OUT/runs/<run_id>)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and exit."),
    tracker: o.Tracker = None,
    slurm_partition: str | None = typer.Option(None, help="Slurm partition of the jobs. [default: the cluster's]"),
    slurm_time: int = typer.Option(240, help="Time limit of one Slurm job in minutes (a job that reaches it is "
                                   "requeued and resumes its run)."),
    slurm_gpus: int = typer.Option(0, help="GPUs per Slurm job."),
    slurm_cpus: int = typer.Option(4, help="CPU cores per Slurm job."),
    slurm_mem_gb: float | None = typer.Option(None, help="Memory per Slurm job in GB. [default: the partition's]"),
    slurm_array: int = typer.Option(0, help="At most this many Slurm jobs at once (0: no limit)."),
    runs_per_job: int = typer.Option(1, help="Consecutive runs per Slurm job (a partition's methods come together)."),
    slurm_setup: list[str] | None = typer.Option(None, help="Shell line run before each job, e.g. 'module load cuda' "
                                                 "(repeatable)."),
    slurm_option: list[str] | None = typer.Option(None, help="Further sbatch setting KEY=VALUE, e.g. account=mylab "
                                                  "or qos=high (repeatable)."),
    slurm_cluster: str = typer.Option("slurm", help="slurm, or local: the same jobs as processes on this machine "
                                      "(submitit's local executor), to try a set-up without a cluster."),
    settings: dict | None = None,
) -> None:
    """Run a grid of experiments; finished runs are skipped and interrupted ones resume.

    Example: livar-bench sweep --datasets digits --methods fedavg,livar --alphas 0.1,0.5 --seeds 0,1 --out results/
    """
    from livar_bench.experiments import sweep as sw

    base = dict(settings or {})
    grid = dict(datasets=sw.split_list(datasets), methods=sw.split_list(methods), partitions=sw.split_list(partitions),
                alphas=sw.parse_numbers(alphas, float, "alphas"), seeds=sw.parse_numbers(seeds, int, "seeds"))
    spec = sw.load_sweep(config) if config else sw.SweepConfig()
    spec = sw.with_overrides(spec, grid, base)
    if not spec.grid.methods and "method" not in spec.base:
        raise BenchError("no methods given; pass --methods (e.g. --methods fedavg,livar) or --config FILE")
    runs = sw.expand(spec)
    from livar_bench.resources import check_image_size

    for size, batch, eval_batch in {(r.image_size, r.batch_size, r.eval_batch_size) for r in runs}:
        check_image_size(size, batch, eval_batch)
    from livar_bench.experiments.trackers import check_trackers

    how = executor_options(executor, ray_address, check_trackers(tracker), slurm_options(
        slurm_partition, slurm_time, slurm_gpus, slurm_cpus, slurm_mem_gb, slurm_array, runs_per_job, slurm_setup,
        slurm_option, slurm_cluster))
    if not dry_run:  # refused before anything is printed or written
        sw.check_data(runs)
        from livar_bench.experiments.executors import get_executor

        get_executor(executor, **how)
    console.print(sw.sweep_summary(runs), highlight=False, soft_wrap=True)
    from livar_bench.models.sizes import size_note

    for backbone, size in dict.fromkeys((r.backbone, r.image_size) for r in runs):
        console.print(f"{backbone}: {size_note(backbone, size)}", highlight=False, soft_wrap=True)
    if dry_run:
        for r in runs:
            where = f"alpha={r.alpha:g}" if r.partition == "dirichlet" else r.partition_label
            typer.echo(f"{r.run_id}  {r.method}  {r.dataset}  {where}  seed={r.seed}")
        return
    from livar_bench.store import nothing_left_on_failure

    with nothing_left_on_failure(out, [r.run_id for r in runs]):
        result = run_sweep(spec, runs, out, executor, how)
        if result.failures:
            raise BenchError(f"{len(result.failures)} run(s) failed ({result.failures[0][1]}); fix and rerun the "
                             f"same command: finished runs are kept")


def slurm_options(partition: str | None = None, time_min: int = 240, gpus: int = 0, cpus: int = 4,
                  mem_gb: float | None = None, array: int = 0, runs_per_job: int = 1, setup: list[str] | None = None,
                  extra: list[str] | None = None, cluster: str = "slurm") -> Any:
    """The ``--slurm-*`` options as ``SlurmOptions`` (``--slurm-option KEY=VALUE`` parsed)."""
    from livar_bench.experiments.slurm import SlurmOptions

    pairs = {}
    for item in extra or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--slurm-option {item!r}: expected KEY=VALUE, e.g. --slurm-option account=mylab")
        pairs[key.strip()] = value.strip()
    return SlurmOptions(partition, time_min, gpus, cpus, mem_gb, array, runs_per_job, tuple(setup or ()), pairs,
                        cluster)


def executor_options(executor: str, ray_address: str | None = None, trackers: tuple[str, ...] = (),
                     slurm: Any = None) -> dict[str, Any]:
    """Keyword arguments of ``get_executor`` for the chosen executor (the sweep's group is set later)."""
    from livar_bench.experiments.trackers import TrackerConfig

    how: dict[str, Any] = {"trackers": TrackerConfig(trackers)}
    if executor == "ray":
        how["address"] = ray_address
    elif executor == "slurm":
        how["options"] = slurm
    return how


def run_sweep(config: Any, runs: list, out: Path, executor: str = "local", how: dict[str, Any] | None = None) -> Any:
    """Check data, record the sweep, run it with progress, and print a one-line summary."""
    import dataclasses

    from livar_bench.experiments import sweep as sw
    from livar_bench.experiments.executors import get_executor

    sw.check_data(runs)  # every dataset before any training: a missing one fails at once
    how = dict(how or executor_options(executor))
    get_executor(executor, **how)  # an unusable executor is refused before the manifest is written
    manifest = sw.write_manifest(config, runs, out)
    if how.get("trackers") is not None:  # a sweep's runs form one group in each tracker
        how["trackers"] = dataclasses.replace(how["trackers"], group=config.name or f"sweep-{manifest.stem}")
    runner = get_executor(executor, **how)
    with SweepProgress() as progress:
        result = runner.run(runs, out, on_event=progress)
    console.print(
        f"sweep finished in {result.seconds:.0f}s: {result.trained} trained, "
        f"{result.already_done} already done, {len(result.failures)} failed"
        + (f", {len(result.locked)} left to another process" if result.locked else ""),
        highlight=False, soft_wrap=True,
    )
    return result
