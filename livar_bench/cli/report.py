"""``livar-bench report``: one self-contained HTML page of a results folder (tables, intervals, plots,
provenance), readable offline from the file alone."""

from __future__ import annotations

from pathlib import Path

import typer

from livar_bench.cli import app
from livar_bench.cli.ui import console


@app.command()
def report(
    out: Path = typer.Option(Path("results"), help="Results folder holding runs/; the page goes to OUT/report.html."),
    metric: str = typer.Option("acc", help="Test metric of the tables and plots (acc = top-1 accuracy)."),
    vs: str | None = typer.Option(None, help="Baseline of the paired differences. [default: fedavg when present, "
                                  "else the first method]"),
    title: str | None = typer.Option(None, help="Page title. [default: the results folder's name]"),
) -> None:
    """Write one HTML page: results table, paired intervals, costs, plots and each run's provenance.

    Example: livar-bench report --out results/
    """
    from livar_bench import reporting as rp
    from livar_bench.reporting.page import build_page
    from livar_bench.store import write_bytes

    tidy, remember = rp.read_runs(out)
    page = build_page(out, tidy, metric=metric, baseline=vs, title=title)  # bad settings fail before any write
    remember()
    path = Path(out) / "report.html"
    write_bytes(path, page.encode())
    console.print(f"wrote {path} ({len(page) / 1e6:.1f} MB; open it in any browser, no server needed)",
                  highlight=False, soft_wrap=True)
