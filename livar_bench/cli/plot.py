"""``livar-bench plot``: accuracy per round per method, and final accuracy against alpha."""

from __future__ import annotations

from pathlib import Path

import typer

from livar_bench.cli import app
from livar_bench.cli.ui import console


def build_plots(out: Path, metric: str = "acc", tidy=None) -> list[Path]:
    """Write PNG and PDF figures to ``<out>/figures``; returns the files written (``tidy``: rows already
    collected by the caller)."""
    from livar_bench import reporting as rp

    tidy, remember = rp.read_runs(out) if tidy is None else (tidy, lambda: None)
    finals = rp.final_values(tidy, metric)  # an unknown metric fails before any figure is written
    folder = Path(out) / "figures"
    written = rp.plot_curves(tidy, folder, metric)
    written += rp.plot_final_vs_alpha(finals, folder, metric)
    remember()
    return written


@app.command()
def plot(
    out: Path = typer.Option(Path("results"), help="Results folder holding runs/."),
    metric: str = typer.Option("acc", help="Test metric to plot (acc = top-1 accuracy)."),
) -> None:
    """Plot test accuracy per round per method and final accuracy vs alpha per dataset (PNG + PDF).

    Example: livar-bench plot --out results/
    """
    written = build_plots(out, metric)
    console.print(f"wrote {len(written)} files to {Path(out) / 'figures'}", highlight=False, soft_wrap=True)
