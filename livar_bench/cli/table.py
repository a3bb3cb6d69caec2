"""``livar-bench table``: pivot finished runs into mean ± std tables (LaTeX, CSV, Markdown)."""

from __future__ import annotations

from pathlib import Path

import typer

from livar_bench.cli import app
from livar_bench.cli.ui import console
from livar_bench.errors import BenchError
from livar_bench.store import write_bytes

FORMATS = {"latex": ".tex", "csv": ".csv", "markdown": ".md"}


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise BenchError(f"unknown --format {fmt!r}; choose latex, csv or markdown")


def build_table(out: Path, fmt: str = "markdown", metric: str = "acc", split: str = "test",
                rows: str = "method", cols: str = "dataset,alpha", order: str | None = None,
                labels: list[str] | None = None, tidy=None) -> tuple[str, Path]:
    """Write the tidy results and one table; returns (table text, path written).

    ``tidy``: the collected rows when the caller already has them (then tidy.csv is not rewritten).
    """
    from livar_bench import reporting as rp

    check_format(fmt)
    fresh = tidy is None
    if fresh:
        tidy, remember = rp.read_runs(out)
    text, path = render_table(out, tidy, fmt, metric, split, rows, cols, order, labels)
    if fresh:
        remember()
        rp.write_tidy(tidy, out, unchanged=not remember.fresh)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, text.encode())
    return text, path


def render_table(out: Path, tidy, fmt: str = "markdown", metric: str = "acc", split: str = "test",
                 rows: str = "method", cols: str = "dataset,alpha", order: str | None = None,
                 labels: list[str] | None = None) -> tuple[str, Path]:
    """One table's text and the path it belongs at; nothing is written (bad settings fail here)."""
    from livar_bench import reporting as rp
    from livar_bench.experiments.sweep import split_list

    check_format(fmt)
    row_keys, col_keys = split_list(rows) or [], split_list(cols) or []
    style = rp.Style(
        method_order=tuple(split_list(order)) if order else rp.DEFAULT_METHOD_ORDER,
        labels={**rp.DEFAULT_LABELS, **rp.parse_labels(labels)},
    )
    finals = rp.final_values(tidy, metric, split)
    settings = rp.run_settings(out, finals["run_id"].unique().tolist())
    pivot = rp.make_pivot(finals, row_keys, col_keys, metric, style, settings)
    if fmt == "latex":
        text = rp.to_latex(pivot, style, label=f"tab:{metric}")
    elif fmt == "markdown":
        text = rp.to_markdown(pivot, style)
    else:
        text = rp.to_csv_frame(pivot).to_csv(index=False)
    stem = f"{metric}_{'-'.join(row_keys)}_by_{'-'.join(col_keys)}"
    return text, Path(out) / "tables" / f"{stem}{FORMATS[fmt]}"


@app.command()
def table(
    out: Path = typer.Option(Path("results"), help="Results folder holding runs/."),
    format: str = typer.Option("markdown", "--format", help="latex (booktabs), csv or markdown."),
    metric: str = typer.Option("acc", help="Metric after the last round (acc = top-1 test accuracy)."),
    split: str = typer.Option("test", help="Split the metric is read from (test, train, cost)."),
    rows: str = typer.Option("method", help="Comma-separated keys for table rows."),
    cols: str = typer.Option("dataset,alpha", help="Comma-separated keys for table columns."),
    order: str | None = typer.Option(None, help="Method order, e.g. fedavg,ccvr,livar (others follow)."),
    label: list[str] | None = typer.Option(None, help="Display name NAME=TEXT (repeatable), e.g. livar='LIVAR (ours)'."),
    vs: str | None = typer.Option(None, help="Also print paired differences of every method against this baseline."),
) -> None:
    """Tabulate finished runs: mean ± std over seeds, n shown, best per column in bold.

    Example: livar-bench table --out results/ --format latex --rows method --cols dataset,alpha
    """
    from livar_bench import reporting as rp

    check_format(format)  # before reading any run
    tidy, remember = rp.read_runs(out)
    text, path = render_table(out, tidy, format, metric, split, rows, cols, order, label)
    paired = _paired(out, tidy, vs, metric, split) if vs else None  # bad settings fail before anything is written
    remember()  # the cache first: a tidy.csv written after it is known to be current
    rp.write_tidy(tidy, out, unchanged=not remember.fresh)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, text.encode())
    typer.echo(text, nl=False)
    console.print(f"wrote {path} and {Path(out) / 'tables' / 'tidy.csv'}", highlight=False, soft_wrap=True)
    if paired is not None:
        _show_paired(paired, vs, metric)


def _paired(out: Path, tidy, baseline: str, metric: str, split: str):
    """Paired differences (method - baseline, same partition and seed) from livar_bench.analysis."""
    from livar_bench import reporting as rp
    from livar_bench.reporting.stats import paired_differences

    settings = rp.run_settings(out, tidy["run_id"].unique().tolist())
    return paired_differences(tidy, baseline, metric=metric, split=split, settings=settings)


def _show_paired(result, baseline: str, metric: str) -> None:
    from livar_bench import reporting as rp

    if result.empty:  # only the baseline ran, or no other method shares a cell and seed with it
        console.print(f"paired differences vs {baseline}: no other method has a run on the same dataset, alpha and "
                      f"seed as {baseline}; run one (e.g. sweep --methods {baseline},livar) to compare",
                      highlight=False, soft_wrap=True)
        return
    console.print(f"paired differences vs {baseline} ({result.attrs.get('reported', metric)}; "
                  f"mean over seeds with a 95% t-interval):", highlight=False, soft_wrap=True)
    shown = result.copy()
    for column in ("mean_diff", "ci_low", "ci_high", "method_mean", "baseline_mean"):
        if column in shown.columns:
            shown[column] = shown[column] * (100.0 if metric in rp.PERCENT_METRICS else 1.0)
    typer.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
