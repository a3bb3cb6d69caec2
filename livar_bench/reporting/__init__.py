"""Run records -> tidy rows -> pivots (mean ± std over seeds, n shown) -> CSV / Parquet / LaTeX / Markdown,
plots, paired comparisons and the comparison with published numbers.

    tidy        tidy rows of every finished run (incremental), their stored settings, final values
    pooling     the one guard deciding which rows may be pooled into one number
    pivot       table cells (mean, std, n over seeds), their order and labels
    render      Markdown, LaTeX (booktabs, best per column in bold) and CSV of pivots and ablations
    plots       accuracy per round, final accuracy vs alpha
    stats       paired differences with Student-t intervals, best-round selection, ablation tables
    published   a user-supplied CSV of published numbers, validated, and ours beside them
    page        one self-contained HTML page of a results folder (``livar-bench report``)
"""

from livar_bench.reporting.pivot import (
    DATASET_ORDER,
    DEFAULT_LABELS,
    DEFAULT_METHOD_ORDER,
    DEFAULT_METRIC,
    KEY_ALIASES,
    KEY_TITLES,
    LOWER_IS_BETTER,
    METRIC_TITLES,
    PERCENT_METRICS,
    Pivot,
    Style,
    groupable,
    make_pivot,
    parse_labels,
    summarize,
    with_settings,
)
from livar_bench.reporting.plots import (
    BAND_NOTE,
    BAR_NOTE,
    plot_curves,
    plot_final_vs_alpha,
    pyplot_agg,
)
from livar_bench.reporting.pooling import (
    CELL,
    PARTITION_COLUMNS,
    check_pooling,
    require_columns,
)
from livar_bench.reporting.published import (
    PUBLISHED_COLUMNS,
    compare_frame,
    load_published,
    ours_summary,
)
from livar_bench.reporting.render import (
    format_pm,
    latex_escape,
    render_ablation,
    to_csv_frame,
    to_latex,
    to_markdown,
)
from livar_bench.reporting.stats import (
    ABLATION_VARIANTS,
    ablation_summary,
    ablation_table,
    paired_differences,
    round_label,
    select_values,
    t_quantile,
)
from livar_bench.reporting.tidy import (
    TIDY_CACHE,
    collect,
    final_values,
    read_metrics,
    read_runs,
    run_settings,
    upgrade_methods,
    write_tidy,
)

__all__ = [
    "ABLATION_VARIANTS",
    "BAND_NOTE",
    "BAR_NOTE",
    "CELL",
    "DATASET_ORDER",
    "DEFAULT_LABELS",
    "DEFAULT_METHOD_ORDER",
    "DEFAULT_METRIC",
    "KEY_ALIASES",
    "KEY_TITLES",
    "LOWER_IS_BETTER",
    "METRIC_TITLES",
    "PARTITION_COLUMNS",
    "PERCENT_METRICS",
    "PUBLISHED_COLUMNS",
    "Pivot",
    "Style",
    "TIDY_CACHE",
    "ablation_summary",
    "ablation_table",
    "check_pooling",
    "collect",
    "compare_frame",
    "final_values",
    "format_pm",
    "groupable",
    "latex_escape",
    "load_published",
    "make_pivot",
    "ours_summary",
    "paired_differences",
    "parse_labels",
    "plot_curves",
    "plot_final_vs_alpha",
    "pyplot_agg",
    "read_metrics",
    "read_runs",
    "render_ablation",
    "require_columns",
    "round_label",
    "run_settings",
    "select_values",
    "summarize",
    "t_quantile",
    "to_csv_frame",
    "to_latex",
    "to_markdown",
    "upgrade_methods",
    "with_settings",
    "write_tidy",
]
