"""Rendering pivots and the ablation table: Markdown, LaTeX (booktabs, best entry per column in bold), CSV.
"""

from __future__ import annotations

import math

import pandas as pd

from livar_bench.errors import BenchError
from livar_bench.reporting.pivot import KEY_TITLES, METRIC_TITLES, Pivot, Style

_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters; α becomes $\\alpha$."""
    escaped = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    return escaped.replace("±", r"$\pm$").replace("α", r"$\alpha$").replace("–", "--")


def _cell(mean: float, std: float, n: float, scale: float, show_n: bool, pm: str) -> str:
    if math.isnan(mean):
        return "–"
    text = f"{mean * scale:.2f}"
    if not math.isnan(std):
        text += f" {pm} {std * scale:.2f}"
    if show_n:
        text += f" (n={int(n)})"
    return text


def _caption(pivot: Pivot) -> str:
    if pivot.split == "test":
        title = METRIC_TITLES.get(pivot.metric, f"{pivot.metric} after the last round")
    else:
        title = METRIC_TITLES.get((pivot.split, pivot.metric), f"{pivot.metric} ({pivot.split}) in the last round")
    return f"{title}; {pivot.seeds_note()[0]}."


def _tuples(index: pd.Index) -> list[tuple]:
    return [t if isinstance(t, tuple) else (t,) for t in index]


def to_markdown(pivot: Pivot, style: Style | None = None) -> str:
    """A GitHub-flavoured Markdown table (caption line above it), best per column in bold."""
    style = style or pivot.style
    best = pivot.best()
    _, uniform = pivot.seeds_note()
    head = [" / ".join(KEY_TITLES.get(k, k) for k in pivot.rows)]
    head += [" ".join(style.label(k, v) for k, v in zip(pivot.cols, t, strict=True)) for t in _tuples(pivot.mean.columns)]
    lines = [f"_{_caption(pivot)}_", "", "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for i, row in enumerate(_tuples(pivot.mean.index)):
        cells = [" / ".join(style.label(k, v) for k, v in zip(pivot.rows, row, strict=True))]
        for j in range(pivot.mean.shape[1]):
            text = _cell(pivot.mean.iat[i, j], pivot.std.iat[i, j], pivot.n.iat[i, j], pivot.scale, not uniform, "±")
            cells.append(f"**{text}**" if best.iat[i, j] else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_latex(pivot: Pivot, style: Style | None = None, label: str = "tab:results") -> str:
    """A booktabs ``table`` (needs \\usepackage{booktabs}); grouped column headers, best per column bold."""
    style = style or pivot.style
    best = pivot.best()
    _, uniform = pivot.seeds_note()
    ncols = pivot.mean.shape[1]
    nrow_keys = len(pivot.rows)
    cols = _tuples(pivot.mean.columns)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(_caption(pivot))}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{{'l' * nrow_keys}{'c' * ncols}}}", r"\toprule"]
    for level in range(len(pivot.cols)):
        # consecutive columns sharing the same prefix up to this level form one spanning header
        spans: list[tuple[str, int]] = []
        last_level = level == len(pivot.cols) - 1
        for j, t in enumerate(cols):
            if j and not last_level and cols[j - 1][: level + 1] == t[: level + 1]:
                spans[-1] = (spans[-1][0], spans[-1][1] + 1)
            else:
                spans.append((latex_escape(style.label(pivot.cols[level], t[level])), 1))
        first = [latex_escape(" / ".join(KEY_TITLES.get(k, k) for k in pivot.rows))] if level == len(pivot.cols) - 1 \
            else [""]
        first += [""] * (nrow_keys - 1)
        cells = [f"\\multicolumn{{{s}}}{{c}}{{{t}}}" if s > 1 else t for t, s in spans]
        lines.append(" & ".join(first + cells) + r" \\")
        if level < len(pivot.cols) - 1:
            start, rules = nrow_keys + 1, []
            for _, s in spans:
                rules.append(f"\\cmidrule(lr){{{start}-{start + s - 1}}}")
                start += s
            lines.append(" ".join(rules))
    lines.append(r"\midrule")
    for i, row in enumerate(_tuples(pivot.mean.index)):
        cells = [latex_escape(style.label(k, v)) for k, v in zip(pivot.rows, row, strict=True)]
        for j in range(ncols):
            text = latex_escape(_cell(pivot.mean.iat[i, j], pivot.std.iat[i, j], pivot.n.iat[i, j], pivot.scale,
                                      not uniform, "±"))
            cells.append(rf"\textbf{{{text}}}" if best.iat[i, j] else text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv_frame(pivot: Pivot) -> pd.DataFrame:
    """The pivot as a long numeric frame: keys, mean, std, n (in the displayed unit)."""
    mean = pivot.mean.stack(list(range(len(pivot.cols))), future_stack=True).rename("mean")
    std = pivot.std.stack(list(range(len(pivot.cols))), future_stack=True).rename("std")
    n = pivot.n.stack(list(range(len(pivot.cols))), future_stack=True).rename("n")
    frame = pd.concat([mean * pivot.scale, std * pivot.scale, n], axis=1).reset_index()
    frame.insert(len(pivot.rows) + len(pivot.cols), "metric", pivot.metric)
    frame["unit"] = "percent" if pivot.scale == 100.0 else "raw"
    return frame.dropna(subset=["mean"]).reset_index(drop=True)


def format_pm(mean: float, std: float, n: float) -> str:
    """``85.31 ± 0.42 (n=3)`` (or ``–`` when missing)."""
    if mean is None:
        return "–"
    return _cell(mean, std, n, scale=1.0, show_n=True, pm="±")


def render_ablation(table: pd.DataFrame, fmt: str = "markdown") -> str:
    """Render an ``ablation_table`` (string cells, columns (dataset, alpha)) as markdown, latex or csv."""
    headers = [f"{d} α={a:g}" for d, a in table.columns]
    cells = table.fillna("–").astype(str)
    caption = table.attrs.get("reported", "")
    if fmt == "csv":
        return cells.set_axis(headers, axis=1).rename_axis("variant").to_csv()
    if fmt == "markdown":
        lines = ["| variant | " + " | ".join(headers) + " |", "|---" * (len(headers) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(row) + " |" for name, row in zip(cells.index, cells.values, strict=True)]
        return "\n".join(lines) + (f"\n\n{caption}; mean ± std over seeds.\n" if caption else "\n")
    if fmt == "latex":
        esc = latex_escape
        body = [" & ".join([esc(str(name)), *map(esc, row)]) + r" \\"
                for name, row in zip(cells.index, cells.values, strict=True)]
        return "\n".join([
            r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "c" * len(headers) + "}", r"\toprule",
            " & ".join(["Variant", *map(esc, headers)]) + r" \\", r"\midrule", *body, r"\bottomrule",
            r"\end{tabular}", rf"\caption{{LIVAR ablation: {esc(caption)}, mean $\pm$ std over seeds.}}",
            r"\label{tab:ablation}", r"\end{table}", "",
        ])
    raise BenchError(f"unknown format {fmt!r}; choose markdown, latex or csv")
