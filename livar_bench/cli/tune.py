"""``livar-bench tune``: pick a method's hyperparameters on a validation split carved from client data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from livar_bench.cli import app
from livar_bench.cli import options as o
from livar_bench.errors import BenchError
from livar_bench.store import write_bytes


class _TuneLog:
    """One line per tuning run; per-round test numbers are deliberately not shown while tuning."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, event: str, **info: Any) -> None:
        from livar_bench.cli.ui import console

        if event == "tune_run":
            self.count += 1
            console.print(f"[{self.count}/{info['total']}] {info['spec']} seed={info['seed']}", highlight=False)
        elif event == "locked":
            console.print(f"run {info['run_id']} is being run by another process", highlight=False)
        elif event == "warning":
            console.print(f"warning: {info['message']}", highlight=False, soft_wrap=True)


@app.command()
@o.run_options(skip=("seed",))
def tune(
    method: str = typer.Option(..., help="Method spec to tune, e.g. ties or livar+ccvr."),
    grid: list[str] = typer.Option(..., help="KEY=V1,V2,... (repeatable); KEY may be COMPONENT.KEY, e.g. ccvr.epochs, "
                                   "or a run setting (lr, weight_decay, local_epochs, batch_size, lora_rank, "
                                   "lora_alpha; run.KEY when the method has a key of that name)."),
    seeds: str = typer.Option("0", help="Comma-separated seeds; scores are averaged over them."),
    val_fraction: float | None = typer.Option(None, help="Share of each client's training data held out (default 0.1)."),
    config: o.Config = None,
    out: Path = typer.Option(Path("results"), help="Results folder; tuning goes to OUT/tuning/."),
    tracker: o.Tracker = None,
    settings: dict | None = None,
) -> None:
    """Grid-search a method's hyperparameters by last-round validation accuracy; print the chosen spec.

    Example: livar-bench tune --method ties --grid density=0.2,0.3,0.5 --grid lam=0.4,1.0 --dataset digits;
    the client learning rate: livar-bench tune --method fedavg --grid lr=1e-4,3e-4,1e-3 --dataset digits
    """
    from livar_bench.cli.ui import console
    from livar_bench.config import make_spec
    from livar_bench.experiments.sweep import parse_numbers
    from livar_bench.experiments.trackers import TrackerConfig, Trackers, check_trackers, fan_out
    from livar_bench.experiments.tune import file_name
    from livar_bench.experiments.tune import tune as run_tune

    values = o.spec_values(config, settings or {})
    if val_fraction is not None:
        values["val_fraction"] = val_fraction
    values["method"] = method
    base = make_spec(values)
    seed_list = parse_numbers(seeds, int, "seeds") or []
    if not seed_list:
        raise BenchError("--seeds is empty; give e.g. --seeds 0,1")
    # the tuning runs live in OUT/tuning (and so do their trackers' files), one group per tuned method
    trackers = TrackerConfig(check_trackers(tracker), group=f"tune-{Path(file_name(method)).stem}")
    with Trackers(trackers, Path(out).expanduser() / "tuning") as hub:
        result = run_tune(base, method, grid, seed_list, out, on_event=fan_out(hub, _TuneLog()))
    for c in result.candidates:
        mark = "*" if c is result.chosen else " "
        console.print(f"{mark} {c.spec:40s} val acc {c.mean:.4f}", highlight=False)
    console.print(f"recorded in {result.path}; run the chosen spec on the test protocol:", highlight=False)
    typer.echo(result.chosen.spec)


@app.command()
def ablation(
    out: Path = typer.Option(Path("results/ablation"), help="Results folder of the ablation sweep (holds runs/)."),
    format: str = typer.Option("markdown", "--format", help="markdown, latex or csv."),
    variant: list[str] | None = typer.Option(None, help="LABEL=METHOD_SPEC (repeatable); default: the LIVAR "
                                             "head/LoRA ablation of configs/ablation.yaml."),
    metric: str = typer.Option("acc", help="Metric (last round unless --round)."),
    round: str = typer.Option("last", help="last, best (round chosen on the validation split) or a number."),
) -> None:
    """Ablation table: one row per variant, one column per (dataset, alpha), mean ± std over seeds.

    Example: livar-bench sweep --config livar_bench/configs/ablation.yaml --out results/ablation &&
    livar-bench ablation --out results/ablation --format latex
    """
    from livar_bench.cli.ui import console
    from livar_bench.methods import canonical_spec
    from livar_bench.reporting import collect
    from livar_bench.reporting.render import render_ablation
    from livar_bench.reporting.stats import ABLATION_VARIANTS, ablation_table

    frame = collect(out)
    if variant:
        variants = {}
        for item in variant:
            label, sep, spec = item.partition("=")
            if not sep or not label.strip() or not spec.strip():
                raise BenchError(f"--variant {item!r}: expected LABEL=METHOD_SPEC, e.g. 'head only=livar[lora=false]'")
            variants[label.strip()] = canonical_spec(spec.strip())
    else:
        present = set(frame["method"])
        variants = {k: v for k, v in ABLATION_VARIANTS.items() if v in present}
        if not variants:
            raise BenchError(f"no ablation runs under {out}; run `livar-bench sweep --config "
                             f"livar_bench/configs/ablation.yaml --out {out}` first")
        missing = [v for v in ABLATION_VARIANTS.values() if v not in present]
        if missing:
            console.print(f"note: no runs yet of {', '.join(missing)}", highlight=False)
    table = ablation_table(frame, variants, metric=metric, round=int(round) if round.isdigit() else round)
    text = render_ablation(table, format)
    suffix = {"markdown": ".md", "latex": ".tex", "csv": ".csv"}[format]
    path = Path(out) / "tables" / f"ablation_{metric}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, text.encode())
    typer.echo(text, nl=False)
    console.print(f"wrote {path}", highlight=False)
