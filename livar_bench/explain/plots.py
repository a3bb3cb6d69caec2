"""Pictures of the SHAP analysis: beeswarm summary, dependence plots and the two rule tables.

Everything renders with matplotlib's Agg backend (no display needed); ``shap`` is imported lazily.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from livar_bench.explain.rule import BUCKETS, DerivedRule
from livar_bench.explain.surrogate import Attribution
from livar_bench.methods.livar_rule import PAPER_RULE, LivarRule
from livar_bench.reporting import pyplot_agg

FEATURE_LABELS = {"a_pos": "A-signal quantile position", "b_pos": "B-signal quantile position",
                  "depth": "relative block depth", "kind_code": "module kind (qkv, proj, fc1, fc2)",
                  "client_share": "client share of samples"}


def save_summary(attribution: Attribution, x: np.ndarray, path: Path) -> Path:
    """SHAP beeswarm: one dot per sample and feature, coloured by the feature's value."""
    import shap

    plt = pyplot_agg()
    names = [FEATURE_LABELS.get(f, f) for f in attribution.features]
    plt.figure()
    shap.summary_plot(attribution.values, x, feature_names=names, show=False, rng=np.random.default_rng(0))
    plt.title("SHAP values of the merge-outcome surrogate")
    plt.tight_layout()
    plt.savefig(path, dpi=130)
    plt.close("all")
    return path


def save_dependence(attribution: Attribution, x: np.ndarray, feature: str, interaction: str, path: Path) -> Path:
    """SHAP value of ``feature`` against its value, coloured by ``interaction``."""
    import shap

    plt = pyplot_agg()
    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(attribution.features)
    shap.dependence_plot(names.index(feature), attribution.values, x, feature_names=names,
                         interaction_index=names.index(interaction), ax=ax, show=False)
    ax.set_xlabel(FEATURE_LABELS.get(feature, feature))
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close("all")
    return path


def save_tables(derived: DerivedRule, path: Path, paper: LivarRule = PAPER_RULE) -> Path:
    """Heatmaps of the derived and the paper's bucket weights, each as shares of its 9-bucket total."""
    plt = pyplot_agg()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, rule, title in ((axes[0], derived.rule, "derived (this run)"), (axes[1], paper, "paper")):
        table = rule.table.numpy()
        share = table / table.sum()
        image = ax.imshow(share, cmap="viridis", vmin=0)
        for i in range(3):
            for j in range(3):
                label = f"{table[i, j]:.4f}"
                if rule is derived.rule:  # how many samples a derived cell rests on (0 = base weight)
                    label += f"\nn={int(derived.counts[i, j])}"
                ax.text(j, i, label, ha="center", va="center", color="w", fontsize=9)
        ax.set_xticks(range(3), [f"A {b}" for b in BUCKETS])
        ax.set_yticks(range(3), [f"B {b}" for b in BUCKETS])
        ax.set_title(title)
        fig.colorbar(image, ax=ax, fraction=0.046, label="share of total")
    fig.suptitle("LIVAR bucket weights (raw; renormalised over clients per module)")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close("all")
    return path


def save_all(attribution: Attribution, table: pd.DataFrame, derived: DerivedRule, out: Path) -> list[Path]:
    """Every picture of an explain run, written into ``out``."""
    from livar_bench.explain.surrogate import feature_matrix

    x = feature_matrix(table, attribution.features)
    return [
        save_summary(attribution, x, out / "shap_summary.png"),
        save_dependence(attribution, x, "b_pos", "a_pos", out / "shap_dependence_b.png"),
        save_dependence(attribution, x, "a_pos", "b_pos", out / "shap_dependence_a.png"),
        save_tables(derived, out / "rule_tables.png"),
    ]
