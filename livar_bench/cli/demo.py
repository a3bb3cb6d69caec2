"""``livar-bench demo``: the whole offline pipeline at toy scale on digits (sweep, table, plots, compare).

Run it with ``make demo``, ``livar-bench demo --out results/demo`` or
``python -m livar_bench demo --out results/demo``. Rerunning reuses the finished runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from livar_bench.cli.ui import console

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def demo(
    out: Path = typer.Option(Path("results/demo"), help="Results folder for the demo."),
    config: Path = typer.Option(DEMO_CONFIG, help="Sweep YAML to run (default: the shipped demo.yaml)."),
) -> None:
    """Run the offline demo: a small sweep on digits, then table, plots and comparison (a few CPU minutes)."""
    from livar_bench.cli.compare import build_comparison
    from livar_bench.cli.plot import build_plots
    from livar_bench.cli.sweep import run_sweep
    from livar_bench.cli.table import build_table
    from livar_bench.experiments import sweep as sw

    start = time.perf_counter()
    spec = sw.load_sweep(config)
    runs = sw.expand(spec)
    console.print(f"demo: {sw.sweep_summary(runs)}", highlight=False, soft_wrap=True)
    result = run_sweep(spec, runs, out)
    if result.failures:
        console.print(f"{len(result.failures)} run(s) failed; the table shows the rest", highlight=False, soft_wrap=True)
    from livar_bench import reporting as rp

    tidy = rp.collect(out)  # read every run once for all tables, plots and the comparison
    rp.write_tidy(tidy, out)
    markdown, _ = build_table(out, "markdown", tidy=tidy)
    for fmt in ("latex", "csv"):
        build_table(out, fmt, tidy=tidy)
    figures = build_plots(out, tidy=tidy)
    _, note, _ = build_comparison(out, tidy=tidy)
    typer.echo(markdown)
    console.print(note, highlight=False, soft_wrap=True)
    console.print(f"tables in {out / 'tables'}, {len(figures)} figure files in {out / 'figures'}; "
                  f"demo took {time.perf_counter() - start:.0f}s", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    import sys

    from livar_bench.cli import main

    sys.argv.insert(1, "demo")  # `python -m livar_bench.cli.demo ARGS` == `livar-bench demo ARGS`
    main()
else:
    from livar_bench.cli import app

    app.command("demo")(demo)
