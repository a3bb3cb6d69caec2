"""``livar-bench compare``: our mean ± std next to published numbers from a CSV the user supplies."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer

from livar_bench.cli import app
from livar_bench.cli.ui import console
from livar_bench.store import write_csv

DEFAULT_PUBLISHED = Path("results/paper/published.csv")


def build_comparison(out: Path, published: Path | None = None, metrics: tuple[str, ...] = ("acc",),
                     tidy=None) -> tuple:
    """Returns (comparison frame, message about the published numbers, path written); ``tidy``: rows
    already collected by the caller."""
    from livar_bench import reporting as rp

    tidy, remember = rp.read_runs(out) if tidy is None else (tidy, lambda: None)
    ours = rp.ours_summary({m: rp.final_values(tidy, m) for m in metrics})
    candidates = [published] if published else [Path(out) / "paper" / "published.csv", DEFAULT_PUBLISHED]
    source = next((p for p in candidates if p is not None and p.is_file()), None)
    if published is not None and source is None:
        rp.load_published(published)  # raises the not-found error with the expected columns
    if source is None:
        note = (f"no published numbers: no file at {DEFAULT_PUBLISHED} (pass --published FILE with columns "
                f"{','.join(rp.PUBLISHED_COLUMNS)}); showing ours only")
        empty = pd.DataFrame(columns=list(rp.PUBLISHED_COLUMNS)).astype({"alpha": float, "value": float})
        table = rp.compare_frame(ours, empty)
    else:
        pub = rp.load_published(source)
        table = rp.compare_frame(ours, pub)
        if pub.empty:
            note = (f"no published numbers: {source} holds only its header (the paper's tables could not be "
                    f"obtained; add rows with their source to compare); showing ours only")
        else:
            matched = int((table["mean"].notna() & table["published"].notna()).sum())
            note = (f"{len(pub)} published numbers from {source}, {matched} matched to our runs by "
                    f"method, dataset, alpha and metric")
    path = Path(out) / "tables" / "compare.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(path, table)
    remember()
    return table, note, path


@app.command()
def compare(
    out: Path = typer.Option(Path("results"), help="Results folder holding runs/."),
    published: Path | None = typer.Option(
        None, help="CSV of published numbers (method,dataset,alpha,metric,value,source; accuracy in percent). "
                   "Default: OUT/paper/published.csv, then results/paper/published.csv."),
) -> None:
    """Compare our results (mean ± std over seeds) with published numbers.

    Example: livar-bench compare --out results/ --published my_numbers.csv
    """
    from rich.table import Table

    from livar_bench import reporting as rp

    frame, note, path = build_comparison(out, published)
    console.print(note, highlight=False, soft_wrap=True)
    view = Table("method", "dataset", "alpha", "metric", "ours (mean ± std, n)", "published", "diff", "source")
    for row in frame.itertuples(index=False):
        pub = "–" if pd.isna(row.published) else f"{row.published:.2f}"
        diff = "–" if pd.isna(row.diff) else f"{row.diff:+.2f}"
        view.add_row(row.method, row.dataset, f"{row.alpha:g}", row.metric, rp.format_pm(row.mean, row.std, row.n),
                     pub, diff, "" if pd.isna(row.source) else str(row.source))
    from rich.console import Console

    Console(markup=False).print(view)
    console.print(f"wrote {path}", highlight=False, soft_wrap=True)
