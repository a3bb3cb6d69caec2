"""One self-contained HTML page of a results folder: what a co-author opens from a mail or a shared drive.

    results table     mean ± std over seeds per method and (dataset, alpha), n shown, best per column bold
    paired intervals  every method minus a baseline, per (dataset, alpha): mean paired difference over the
                      seeds of one partition, with its 95% Student-t interval (reporting.stats)
    costs             per method: wall and training time, bytes per client up and down, peak memory
    plots             accuracy per round and final accuracy vs alpha (reporting.plots), embedded as PNG
    provenance        per run: settings, partition and its heterogeneity, weights hash, versions, git sha,
                      engine, device, cost totals; each run's full records folded under its row

No script, no style sheet, font or image from elsewhere: the page reads the same offline, from a file.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#1b1b1b}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0 1em}th,td{padding:.3em .7em;border-bottom:1px solid #e3e3e3;
text-align:right;white-space:nowrap}th{background:#f4f6f8}td.k,th.k{text-align:left}
p.cap{color:#555;margin:.8em 0 .2em;font-style:italic}
.best{font-weight:700}.note{color:#555}.pos{color:#0a6b2b}.neg{color:#a11}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}details{margin:.2em 0}summary{cursor:pointer}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:12px}code{font-size:12px}
.scroll{overflow-x:auto}
"""
COST_COLUMNS = (  # (cost metric, title, how a run's rounds add up, unit)
    ("wall_s", "wall time", "sum", "s"),
    ("train_s", "client training", "sum", "s"),
    ("aggregate_s", "aggregation", "sum", "s"),
    ("upload_bytes_per_client", "upload / client", "sum", "bytes"),
    ("download_bytes_per_client", "download / client", "sum", "bytes"),
    ("peak_host_rss_bytes", "peak host memory", "max", "bytes"),
    ("peak_cuda_mem_bytes", "peak GPU memory", "max", "bytes"),
)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _bytes(n: float) -> str:
    if n is None or math.isnan(n):
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], caption: str = "", keys: int = 1,
           classes: Sequence[Sequence[str]] | None = None) -> str:
    """An HTML table; cells are already escaped HTML; the first ``keys`` columns are left-aligned."""
    out = [f"<p class=cap>{caption}</p>" if caption else "", "<div class='scroll'><table>"]
    out.append("<tr>" + "".join(f"<th{' class=k' if j < keys else ''}>{h}</th>" for j, h in enumerate(head)) + "</tr>")
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            cls = [*(["k"] if j < keys else []), *([classes[i][j]] if classes and classes[i][j] else [])]
            cells.append(f"<td{' class=' + chr(34) + ' '.join(cls) + chr(34) if cls else ''}>{cell}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table></div>")
    return "\n".join(out)


def results_table(pivot: Any, style: Any) -> str:
    """The pivot (rows: method; columns: dataset, alpha) as HTML, best entry per column in bold."""
    best = pivot.best()
    note, uniform = pivot.seeds_note()
    cols = [c if isinstance(c, tuple) else (c,) for c in pivot.mean.columns]
    head = [" / ".join(esc(k.capitalize()) for k in pivot.rows)]
    head += [esc(" ".join(style.label(k, v) for k, v in zip(pivot.cols, c, strict=True))) for c in cols]
    rows, classes = [], []
    for i, key in enumerate(pivot.mean.index):
        key = key if isinstance(key, tuple) else (key,)
        cells = [esc(" / ".join(style.label(k, v) for k, v in zip(pivot.rows, key, strict=True)))]
        marks = [""]
        for j in range(len(cols)):
            mean, std, n = pivot.mean.iat[i, j], pivot.std.iat[i, j], pivot.n.iat[i, j]
            if math.isnan(mean):
                cells.append("–")
            else:
                text = _num(mean * pivot.scale) + ("" if math.isnan(std) else f" ± {_num(std * pivot.scale)}")
                cells.append(esc(text + ("" if uniform else f" (n={int(n)})")))
            marks.append("best" if best.iat[i, j] else "")
        rows.append(cells)
        classes.append(marks)
    unit = " (%)" if pivot.scale == 100.0 else ""
    caption = esc(f"{pivot.split} {pivot.metric}{unit} after the last round, {note}; best per column in bold.")
    return _table(head, rows, caption, keys=1, classes=classes)


def paired_table(paired: pd.DataFrame, baseline: str, scale: float, style: Any) -> str:
    """Paired differences method - baseline with their 95% intervals (percentage points for accuracy)."""
    if paired.empty:
        return "<p class=note>No method shares seeds with the baseline; nothing to pair.</p>"
    unit = " (points)" if scale == 100.0 else ""
    head = ["Method", "Dataset", "α", "seeds", f"mean difference{unit}", "95% interval", "method", "baseline"]
    rows, classes = [], []
    for _, r in paired.iterrows():
        diff, low, high = r["mean_diff"] * scale, r["ci_low"] * scale, r["ci_high"] * scale
        interval = "needs ≥ 2 seeds" if math.isnan(low) else f"[{_num(low)}, {_num(high)}]"
        rows.append([esc(style.label("method", r["method"])), esc(style.label("dataset", r["dataset"])),
                     esc(f"{r['alpha']:g}"), esc(int(r["n_seeds"])), esc(f"{diff:+.2f}"), esc(interval),
                     esc(_num(r["method_mean"] * scale)), esc(_num(r["baseline_mean"] * scale))])
        sign = "" if math.isnan(low) or low <= 0 <= high else ("pos" if low > 0 else "neg")
        classes.append(["", "", "", "", sign, sign, "", ""])
    caption = esc(f"Each method minus {style.label('method', baseline)} on the same partitions and seeds "
                  f"({paired.attrs.get('reported', 'last round')}); interval: mean ± t·sd/√n over seeds. "
                  "Green: the interval lies above zero; red: below.")
    return _table(head, rows, caption, keys=3, classes=classes)


def run_costs(tidy: pd.DataFrame) -> pd.DataFrame:
    """Per run: each cost metric over its rounds (summed, or the maximum for memory)."""
    cost = tidy[tidy["split"] == "cost"]
    out = pd.DataFrame(index=pd.Index(sorted(tidy["run_id"].unique()), name="run_id"))
    for metric, _, how, _ in COST_COLUMNS:
        rows = cost[cost["metric"] == metric]
        if not rows.empty:
            out[metric] = rows.groupby("run_id")["value"].agg(how)
    return out


def costs_table(costs: pd.DataFrame, finals: pd.DataFrame, style: Any) -> str:
    """Mean over a method's runs of each run's cost totals."""
    present = [c for c in COST_COLUMNS if c[0] in costs.columns]
    if not present:
        return "<p class=note>No cost rows in these runs.</p>"
    method = finals.drop_duplicates("run_id").set_index("run_id")["method"]
    frame = costs.join(method, how="inner")
    means = frame.groupby("method")[[c[0] for c in present]].mean()
    order = sorted(means.index, key=lambda m: style.sort_key("method", m))
    head = ["Method", *(esc(f"{title} ({unit})" if unit == "s" else title) for _, title, _, unit in present)]
    rows = [[esc(style.label("method", m)),
             *(_bytes(means.at[m, c]) if unit == "bytes" else _num(means.at[m, c], 1) for c, _, _, unit in present)]
            for m in order]
    return _table(head, rows, esc("Per run, summed over its rounds (memory: the peak); mean over the method's runs."))


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{esc(alt)}' src='data:image/png;base64,{data}'>"


def plots(tidy: pd.DataFrame, finals: pd.DataFrame, metric: str, style: Any) -> str:
    """The accuracy-per-round and accuracy-vs-alpha figures, drawn into a scratch folder and embedded."""
    from livar_bench.reporting.plots import plot_curves, plot_final_vs_alpha

    parts = []
    with tempfile.TemporaryDirectory(prefix="livar-bench-report-") as tmp:
        for path in plot_curves(tidy, Path(tmp), metric, style):
            if path.suffix == ".png":
                parts.append(_img(path, f"{metric} per round ({path.stem})"))
        for path in plot_final_vs_alpha(finals, Path(tmp), metric, style):
            if path.suffix == ".png":
                parts.append(_img(path, f"final {metric} vs alpha"))
    return "\n".join(parts)


def _short(value: Any, n: int = 12) -> str:
    return "–" if value in (None, "", "none") else str(value)[:n]


def provenance(out: Path, finals: pd.DataFrame, costs: pd.DataFrame, scale: float, style: Any) -> str:
    """One row per run (what it ran, on what, with which code) and its records folded under it."""
    from livar_bench.store import RunStore

    store = RunStore(out)
    head = ["Run", "Method", "Dataset", "α", "Seed", "Final", "Partition", "TV dist.", "Weights sha256",
            "livar-bench", "torch", "git sha", "Engine", "Device", "Wall (s)", "Upload / client"]
    rows, details = [], []
    for _, r in finals.sort_values(["dataset", "alpha", "seed", "method"]).iterrows():
        folder = store.run_dir(r["run_id"])
        records = {}
        for name in ("spec", "env", "partition"):
            try:
                records[name] = json.loads((folder / f"{name}.json").read_text())
            except (OSError, ValueError):
                records[name] = {}
        spec, env, part = records["spec"], records["env"], records["partition"]
        cost = costs.loc[r["run_id"]] if r["run_id"] in costs.index else pd.Series(dtype=float)
        rows.append([f"<a href='#run-{esc(r['run_id'])}'><code>{esc(r['run_id'])}</code></a>",
                     esc(style.label("method", r["method"])), esc(style.label("dataset", r["dataset"])),
                     esc(f"{r['alpha']:g}"), esc(r["seed"]), esc(_num(r["value"] * scale)),
                     f"<code>{esc(_short(spec.get('partition_id') or r.get('partition_id')))}</code>",
                     esc(_num(part.get("tv_distance", float("nan")), 3)),
                     f"<code>{esc(_short(spec.get('weights_sha256') or env.get('weights_sha256'), 16))}</code>",
                     esc(env.get("livar_bench", "–")), esc(env.get("torch", "–")),
                     f"<code>{esc(_short(env.get('git_sha')))}</code>", esc(env.get("engine", "local")),
                     esc(env.get("device_name") or env.get("device", "–")),
                     esc(_num(cost.get("wall_s", float("nan")), 1)),
                     esc(_bytes(cost.get("upload_bytes_per_client", float("nan"))))])
        summary = {k: v for k, v in part.items() if k not in ("class_counts", "sizes")}
        alpha = f"{r['alpha']:g}"
        details.append(
            f"<details id='run-{esc(r['run_id'])}'><summary><code>{esc(r['run_id'])}</code> "
            f"{esc(style.label('method', r['method']))}, {esc(style.label('dataset', r['dataset']))}, "
            f"α={esc(alpha)}, seed {esc(r['seed'])}</summary>"
            f"<p>Settings (spec.json)</p><pre>{esc(json.dumps(spec, indent=1, sort_keys=True))}</pre>"
            f"<p>Environment (env.json)</p><pre>{esc(json.dumps(env, indent=1, sort_keys=True))}</pre>"
            f"<p>Partition (partition.json; client sizes: {esc(part.get('sizes', '–'))})</p>"
            f"<pre>{esc(json.dumps(summary, indent=1, sort_keys=True))}</pre></details>")
    return _table(head, rows, esc("Every run of the tables above. Click a run id for its full records."), keys=5) \
        + "\n" + "\n".join(details)


def build_page(out: str | Path, tidy: pd.DataFrame, metric: str = "acc", baseline: str | None = None,
               title: str | None = None) -> str:
    """The report page of a results folder as one HTML string (nothing is written).

    Raises:
        BenchError: no finished runs, an unknown metric or baseline, or runs that may not be pooled.
    """
    import livar_bench
    from livar_bench import reporting as rp

    out = Path(out)
    style = rp.Style()
    finals = rp.final_values(tidy, metric)
    settings = rp.run_settings(out, finals["run_id"].unique().tolist())
    pivot = rp.make_pivot(finals, ["method"], ["dataset", "alpha"], metric, style, settings)
    methods = [k[0] if isinstance(k, tuple) else k for k in pivot.mean.index]
    baseline = baseline or ("fedavg" if "fedavg" in methods else methods[0])
    paired = rp.paired_differences(tidy, baseline, metric=metric, settings=settings) if len(methods) > 1 else None
    costs = run_costs(tidy)
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    title = title or f"livar-bench results: {out.resolve().name}"
    body = [
        f"<h1>{esc(title)}</h1>",
        f"<p class=note>{len(finals)} finished runs in <code>{esc(out.resolve())}</code>; page made {esc(stamp)} "
        f"by livar-bench {esc(livar_bench.__version__)}. Everything below is read from the runs' own files.</p>",
        "<h2>Results</h2>", results_table(pivot, style),
        f"<h2>Paired differences vs {esc(style.label('method', baseline))}</h2>",
        paired_table(paired, baseline, pivot.scale, style) if paired is not None
        else "<p class=note>One method only: nothing to compare.</p>",
        "<h2>Costs</h2>", costs_table(costs, finals, style),
        "<h2>Plots</h2>", plots(tidy, finals, metric, style),
        "<h2>Provenance</h2>", provenance(out, finals, costs, pivot.scale, style),
    ]
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
