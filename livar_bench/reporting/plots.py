"""Plots: accuracy per round per method (mean and ± 1 std band over seeds), final accuracy vs alpha.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from livar_bench.reporting.pivot import DEFAULT_METRIC, PERCENT_METRICS, Style
from livar_bench.store import atomic_file

# --- plots -----------------------------------------------------------------------------------------

def pyplot_agg():
    """matplotlib.pyplot on the file-only Agg backend (never needs a display); shared by every plot."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".pdf"):
        with atomic_file(path.with_suffix(suffix)) as sink:
            fig.savefig(sink.fh, format=suffix[1:], bbox_inches="tight", dpi=150)
        written.append(path.with_suffix(suffix))
    return written


BAND_NOTE = "line: mean over seeds\nband: ± 1 std over seeds"
BAR_NOTE = "mean over seeds\nbars: ± 1 std over seeds"


def plot_curves(tidy: pd.DataFrame, folder: Path, metric: str = DEFAULT_METRIC, style: Style | None = None) -> list[Path]:
    """Per dataset: ``metric`` per round per method (mean over seeds, band = ± std), one panel per alpha."""
    plt, style = pyplot_agg(), style or Style()
    from matplotlib.ticker import MaxNLocator
    rows = tidy[(tidy["split"] == "test") & (tidy["metric"] == metric)]
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    written = []
    for dataset in sorted(rows["dataset"].unique(), key=lambda d: style.sort_key("dataset", d)):
        sub = rows[rows["dataset"] == dataset]
        alphas = sorted(sub["alpha"].unique())
        fig, axes = plt.subplots(1, len(alphas), figsize=(4 * len(alphas), 3.2), squeeze=False, sharey=True)
        for ax, alpha in zip(axes[0], alphas, strict=True):
            part = sub[sub["alpha"] == alpha]
            for method in sorted(part["method"].unique(), key=lambda m: style.sort_key("method", m)):
                stats = part[part["method"] == method].groupby("round")["value"].agg(["mean", "std"])
                x, y, s = stats.index.to_numpy(), stats["mean"].to_numpy() * scale, stats["std"].fillna(0).to_numpy() * scale
                ax.plot(x, y, marker="o", ms=3, label=style.label("method", method))
                ax.fill_between(x, y - s, y + s, alpha=0.15)
            ax.set_title(f"{style.label('dataset', dataset)}, {style.label('alpha', alpha)}")
            ax.set_xlabel("round")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(f"test {metric}{' (%)' if scale == 100 else ''}")
        axes[0][-1].legend(fontsize=8, title=BAND_NOTE, title_fontsize=8)
        written += _save(fig, folder / f"curves_{metric}_{dataset}")
        plt.close(fig)
    return written


def plot_final_vs_alpha(finals: pd.DataFrame, folder: Path, metric: str = DEFAULT_METRIC,
                        style: Style | None = None) -> list[Path]:
    """Final ``metric`` against alpha (log axis), one panel per dataset, one line per method, error bars = std."""
    plt, style = pyplot_agg(), style or Style()
    from matplotlib.ticker import NullFormatter
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    datasets = sorted(finals["dataset"].unique(), key=lambda d: style.sort_key("dataset", d))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 3.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        sub = finals[finals["dataset"] == dataset]
        for method in sorted(sub["method"].unique(), key=lambda m: style.sort_key("method", m)):
            stats = sub[sub["method"] == method].groupby("alpha")["value"].agg(["mean", "std"])
            ax.errorbar(stats.index, stats["mean"] * scale, yerr=stats["std"].fillna(0) * scale, marker="o", ms=3,
                        capsize=3, label=style.label("method", method))
        ax.set_xscale("log")
        alphas = sorted(sub["alpha"].unique())  # ticks at the alphas run, not a log axis' crowded minor labels
        ax.set_xticks(alphas, [f"{a:g}" for a in alphas])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(style.label("dataset", dataset))
        ax.set_xlabel("Dirichlet α (smaller = more heterogeneous)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"final test {metric}{' (%)' if scale == 100 else ''}")
    axes[0][-1].legend(fontsize=8, title=BAR_NOTE, title_fontsize=8)
    written = _save(fig, folder / f"final_{metric}_vs_alpha")
    plt.close(fig)
    return written
