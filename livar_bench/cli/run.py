"""``livar-bench run``: one federated experiment."""

from __future__ import annotations

from pathlib import Path

import typer

from livar_bench.cli import app
from livar_bench.cli import options as o
from livar_bench.errors import BenchError


def apply_params(method: str, params: list[str] | None) -> str:
    """Fold ``--param name.key=value`` options into the method spec (validated, canonical)."""
    from livar_bench.methods.spec import MethodSpec

    spec = MethodSpec.parse(method)
    for item in params or ():
        target, sep, value = item.partition("=")
        name, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise BenchError(f"--param {item!r}: expected METHOD.KEY=VALUE, e.g. --param ties.density=0.2")
        spec = spec.with_param(name, key, value)
    return str(spec)


def apply_livar_rule(method: str, path: Path) -> str:
    """``method`` with its livar component's ``rule`` set to ``path`` (``run --livar-rule``).

    Any path works: the spec quotes values that the grammar would otherwise split. The file is read
    and validated here, so a bad rule fails before any model is built.
    """
    from livar_bench.methods.spec import MethodSpec

    spec = MethodSpec.parse(method)
    if "livar" not in spec.names:
        raise BenchError(f"--livar-rule needs a method with a livar part (e.g. --method livar or livar+ccvr), "
                         f"not {method!r}")
    return str(spec.with_param("livar", "rule", str(path)))


ENGINES = ("local", "flower")


def engine_launcher(name: str):
    """The ``federation.Launcher`` of ``--engine`` (None for local); checks that flwr is installed."""
    if name not in ENGINES:
        raise BenchError(f"unknown engine {name!r}; use one of: {', '.join(ENGINES)}")
    if name == "local":
        return None
    from livar_bench.flower import require_flwr

    require_flwr()
    from livar_bench.flower.engine import Simulation

    return Simulation()


@app.command()
@o.run_options
def run(
    method: str | None = typer.Option(None, help="Method spec, e.g. livar, livar+ccvr, ties[density=0.3] "
                                      "(livar-bench ls methods). [default: fedavg]"),
    param: list[str] | None = typer.Option(None, help="Method hyperparameter METHOD.KEY=VALUE (repeatable). "
                                           "[default: the method's own, see ls methods]"),
    livar_rule: Path | None = typer.Option(None, help="LIVAR rule JSON (from `livar-bench explain`); sets livar.rule. "
                                           "[default: none]"),
    config: o.Config = None,
    out: Path = typer.Option(Path("results"), help="Results folder (runs go to OUT/runs/<run_id>)."),
    force: bool = typer.Option(False, help="Rerun even if this run is already done (replaced only on success)."),
    engine: str = typer.Option("local", help="local (the in-process round loop) or flower (every round through "
                               "Flower's simulation engine; pip install 'livar-bench[flower]'). Same run id, "
                               "same results."),
    tracker: o.Tracker = None,
    settings: dict | None = None,
) -> None:
    """Run one federated experiment and write its tidy metrics.

    Example: livar-bench run --dataset digits --method livar --alpha 0.5 --clients 4 --rounds 2
    """
    from livar_bench.cli.ui import RunProgress, console
    from livar_bench.config import make_spec
    from livar_bench.device import resolve_device
    from livar_bench.experiments.trackers import TrackerConfig, Trackers, check_trackers, fan_out
    from livar_bench.federation import run_federation
    from livar_bench.resources import check_image_size, configure_threads
    from livar_bench.store import nothing_left_on_failure, sweep_temp_files

    values = o.spec_values(config, settings or {})
    values["method"] = apply_params(method if method is not None else values.get("method", "fedavg"), param)
    if livar_rule is not None:
        values["method"] = apply_livar_rule(values["method"], livar_rule)
    spec = make_spec(values)
    if spec.secure_aggregation and engine != "flower":
        raise BenchError("--secure-aggregation runs in Flower's simulation: add --engine flower")
    check_image_size(spec.image_size, spec.batch_size, spec.eval_batch_size)
    resolve_device(spec.device)  # also when the run is already done (the device is not part of its id)
    sweep_temp_files(out)
    configure_threads()
    launcher = engine_launcher(engine)
    trackers = TrackerConfig(check_trackers(tracker))
    with nothing_left_on_failure(out, [spec.run_id]), RunProgress() as progress, Trackers(trackers, out) as hub:
        outcome = run_federation(spec, out, on_event=fan_out(hub, progress), force=force, launcher=launcher)
    if outcome.skipped and outcome.final:
        console.print(f"run {outcome.run_id} already done ({outcome.run_dir}); use --force to rerun", highlight=False)
    acc = outcome.final.get("acc")
    if acc is not None:
        typer.echo(f"{spec.method} on {spec.dataset}: final test acc {acc:.4f} (run {outcome.run_id}, {outcome.run_dir})")
