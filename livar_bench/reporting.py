"""Run records -> tidy DataFrame -> pivots (mean ± std over seeds, n shown) -> CSV / Parquet / LaTeX /
Markdown, plots, and the comparison with published numbers.

    collect(out)            tidy rows of every finished run (one per run, round, split, metric)
    final_values(tidy)      one value per run: the metric after the last round (default: test acc)
    summarize(finals)       mean, std (ddof=1) and n seeds per table cell
    render(summary, ...)    LaTeX (booktabs) or Markdown text, best entry per column in bold

Pooling rules: a table cell pools runs that differ only in their seed. Two runs in one cell with the
same seed, or methods of one (dataset, alpha, seed) drawn on different partitions (``partition_id``),
are refused with a message naming the settings that differ.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from livar_bench.analysis import select_values
from livar_bench.config import NON_IDENTITY_FIELDS
from livar_bench.errors import BenchError
from livar_bench.latex import latex_escape
from livar_bench.store import RunStore, atomic_file, write_csv

DEFAULT_METRIC = "acc"
METRIC_TITLES = {
    "acc": "Top-1 test accuracy (%) after the last round",
    "loss": "Test loss after the last round",
    ("test_local", "acc"): "Personalised accuracy (%): each client's own model on a test subset with its label "
                           "distribution, mean over clients, after the last round",
    ("test_local", "acc_worst10"): "Personalised accuracy (%) of the worst tenth of clients (own models, local "
                                   "test subsets), after the last round",
    ("test_local", "loss"): "Personalised test loss (own models, local test subsets), mean over clients, "
                            "after the last round",
    ("val", "acc"): "Top-1 validation accuracy (%) after the last round",
}
LOWER_IS_BETTER = frozenset({"loss", "train_s", "aggregate_s", "eval_s", "wall_s", "global_stats_s",
                             "upload_bytes_per_client", "upload_signal_bytes_per_client", "download_bytes_per_client",
                             "wire_upload_bytes_per_client", "wire_download_bytes_per_client",
                             "peak_cuda_mem_bytes", "peak_host_rss_bytes", "nonfinite_signal_steps"})
PERCENT_METRICS = frozenset({"acc", "acc_worst10"})  # stored as fractions, shown (and published) in percent
# Methods: display names and table order come from the registry (methods.display_name, table_order):
# baselines first, ours last, the order a paper table usually takes. A --order given by the user wins.
DEFAULT_METHOD_ORDER: tuple[str, ...] = ()
DEFAULT_LABELS = {
    "cifar100": "CIFAR-100", "imagenet-r": "ImageNet-R", "eurosat": "EuroSAT", "cub200": "CUB-200",
    "digits": "Digits", "synthetic": "Synthetic",
}
DATASET_ORDER = ("cifar100", "imagenet-r", "eurosat", "cub200", "digits", "synthetic")
KEY_TITLES = {"method": "Method", "dataset": "Dataset", "alpha": "α", "num_clients": "Clients",
              "backbone": "Backbone", "seed": "Seed"}
PUBLISHED_COLUMNS = ("method", "dataset", "alpha", "metric", "value", "source")
# Short names accepted by --rows/--cols for stored settings.
KEY_ALIASES = {"epochs": "local_epochs", "clients": "num_clients", "weights_hash": "weights_sha256",
               "hash": "weights_sha256", "rank": "lora_rank", "size": "input_size"}
_NOT_KEYS = frozenset({"run_id", "round", "split", "metric", "value", "seed", "partition_id"})


# --- collecting -----------------------------------------------------------------------------------

TIDY_CACHE = ("cache", "tidy.pkl")  # under <out>: the tidy rows of the finished runs, with their signatures


def collect(out: str | Path) -> pd.DataFrame:
    """Tidy rows of every intact finished run under ``<out>/runs`` (runs in progress are not read);
    the cache of ``read_runs`` is updated at once."""
    frame, remember = read_runs(out)
    remember()
    return frame


def read_runs(out: str | Path) -> tuple[pd.DataFrame, Callable[[], None]]:
    """(tidy rows of every intact finished run, a function that updates the caches): a command calls the
    latter once it has succeeded, so a failed command writes nothing.

    Incremental: the rows are cached in ``<out>/cache/tidy.pkl`` with each run's file signatures (size,
    mtime, inode of DONE and the files it digests); only runs that are new, or whose files changed, are
    verified and read again. A damaged finished run is left out with a warning (store.RunStore).
    """
    from livar_bench.store import DamagedFile, load_pickle, save_pickle, set_aside

    store = RunStore(out)
    ids = store.done_ids()
    if not ids:
        raise BenchError(f"no finished runs under {store.runs}; run `livar-bench sweep --out {out}` first")
    signatures = {i: store.signature(i) for i in ids}
    path = store.root.joinpath(*TIDY_CACHE)
    cached_sigs: dict[str, tuple] = {}
    cached, settings = None, {}
    if path.is_file():
        try:
            data = load_pickle(path)
            cached_sigs, cached, settings = dict(data["signatures"]), data["frame"], dict(data["settings"])
            if not isinstance(cached, pd.DataFrame):
                raise DamagedFile("not a table")
        except (OSError, DamagedFile, KeyError, TypeError, ValueError) as err:
            set_aside(path, str(err), "the tidy rows are read again")
            cached_sigs, cached, settings = {}, None, {}
    root = str(store.root.resolve())
    if cached is not None and cached_sigs == signatures:
        _SETTINGS[root] = settings
        unchanged = _Remember(store.save_index)
        unchanged.fresh = False
        return cached, unchanged
    keep = [i for i in ids if cached_sigs.get(i) == signatures[i]]
    settings = {i: settings[i] for i in keep if i in settings}
    for i in ids:
        if i not in settings:
            try:  # a legacy run (DONE "ok") may lack spec.json: run_settings then reports it when asked
                spec = json.loads((store.run_dir(i) / "spec.json").read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(spec, dict):
                spec.pop("run_id", None)
                settings[i] = spec
    _SETTINGS[root] = settings
    frames = [cached[cached["run_id"].isin(keep)]] if keep and cached is not None else []
    fresh = set(keep)
    new = [store.run_dir(i) / "metrics.csv" for i in ids if i not in fresh]
    if new:
        frames.append(read_metrics(new))
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.sort_values("run_id", kind="stable", ignore_index=True)  # the order of an uncached read

    def remember() -> None:
        save_pickle(path, {"signatures": signatures, "frame": frame, "settings": settings})
        store.save_index()

    return frame, _Remember(remember)


def read_metrics(paths: Sequence[Path]) -> pd.DataFrame:
    """The rows of many metrics.csv files, parsed in one ``read_csv`` per distinct header (pandas costs
    milliseconds per call: thousands of runs read one by one took minutes)."""
    import io

    groups: dict[bytes, list[bytes]] = {}
    for path in paths:
        header, _, body = path.read_bytes().partition(b"\n")
        if body and not body.endswith(b"\n"):
            body += b"\n"
        groups.setdefault(header, []).append(body)
    # ids are hex strings; read as text so an all-digit id keeps its leading zeros
    ids_as_text = {"run_id": str, "partition_id": str}
    frames = [pd.read_csv(io.BytesIO(header + b"\n" + b"".join(bodies)), dtype=ids_as_text)
              for header, bodies in groups.items()]
    return upgrade_methods(pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0])


class _Remember:
    """The cache update ``read_runs`` hands back; ``fresh``: whether any run was read anew."""

    def __init__(self, save: Callable[[], None]) -> None:
        self.save = save
        self.fresh = True

    def __call__(self) -> None:
        self.save()


def upgrade_methods(frame: pd.DataFrame) -> pd.DataFrame:
    """Method strings of runs made by older versions in today's canonical form (``ccvr`` -> ``fedavg+ccvr``),
    so that their rows pool with new runs of the same method."""
    from livar_bench.methods.spec import upgrade_spec

    if "method" in frame:
        mapping = {m: upgrade_spec(m) for m in frame["method"].unique()}
        frame["method"] = frame["method"].map(mapping)
    return frame


def run_settings(out: str | Path, run_ids: Sequence[str]) -> pd.DataFrame:
    """The stored RunSpec of each run, one row per run (index: run_id); cached with the tidy rows."""
    store = RunStore(out)
    cached = _SETTINGS.get(str(store.root.resolve()))
    known = [r for r in run_ids if cached is not None and r in cached]
    have = set(known)
    rows = [json.loads((store.run_dir(r) / "spec.json").read_text()) for r in run_ids if r not in have]
    settings = [{"run_id": r, **cached[r]} for r in known] if cached is not None else []
    frame = pd.DataFrame(settings + rows).set_index("run_id")
    return frame.loc[list(run_ids)] if known and rows else frame


# spec.json of each finished run, as read by read_runs (results folder -> run id -> settings)
_SETTINGS: dict[str, dict[str, dict]] = {}


def write_tidy(frame: pd.DataFrame, out: str | Path, unchanged: bool = False) -> list[Path]:
    """Write ``<out>/tables/tidy.csv`` (and ``tidy.parquet`` when pyarrow is installed).

    ``unchanged``: the rows came from the cache unchanged; files written after the cache are kept.
    """
    folder = Path(out) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "tidy.csv"]
    parquet = folder / "tidy.parquet"
    if unchanged:
        import importlib.util

        wanted = [written[0], *([parquet] if importlib.util.find_spec("pyarrow") else [])]
        try:
            cache = Path(out).joinpath(*TIDY_CACHE).stat().st_mtime_ns
            if all(p.stat().st_mtime_ns >= cache for p in wanted):
                return wanted
        except OSError:
            pass
    write_csv(written[0], frame)
    try:
        import pyarrow  # noqa: F401

        with atomic_file(folder / "tidy.parquet") as sink:
            frame.to_parquet(sink.fh, index=False)
        written.append(folder / "tidy.parquet")
    except ImportError:
        pass  # parquet is optional (pip install 'livar-bench[parquet]'); the CSV holds the same rows
    return written


# --- final values and pooling checks ---------------------------------------------------------------

def final_values(frame: pd.DataFrame, metric: str = DEFAULT_METRIC, split: str = "test") -> pd.DataFrame:
    """One row per run: ``metric`` on ``split`` at the run's last round (column ``value``)."""
    if not ((frame["metric"] == metric) & (frame["split"] == split)).any():
        known = sorted(set(frame.loc[frame["split"] == split, "metric"]))
        raise BenchError(f"no {split} metric {metric!r} in the results; available: {', '.join(known) or 'none'}")
    return select_values(frame, metric, split, "last").reset_index(drop=True)


def _differing(settings: pd.DataFrame | None, run_ids: Sequence[str]) -> str:
    if settings is None:
        return "unknown settings"
    sub = settings.loc[[r for r in run_ids if r in settings.index]]
    ignore = set(NON_IDENTITY_FIELDS) | {"seed"}
    cols = [c for c in sub.columns if c not in ignore and sub[c].astype(str).nunique() > 1]
    return ", ".join(cols) or "no stored setting"


def check_pooling(finals: pd.DataFrame, keys: Sequence[str], settings: pd.DataFrame | None = None) -> None:
    """Refuse cells that would pool runs other than seeds of one experiment.

    Raises:
        BenchError: two runs share a cell and a seed, or methods of one (dataset, alpha, seed) were run on
            different partitions.
    """
    cell = [*keys, "seed"]
    counts = finals.groupby(cell, dropna=False)["run_id"].nunique()
    if (counts > 1).any():
        where = counts[counts > 1].index[0]
        ids = finals.set_index(cell).loc[[where], "run_id"].unique().tolist()
        raise BenchError(
            f"{len(ids)} runs fall into one table cell with the same seed ({dict(zip(cell, where, strict=True))}); they differ "
            f"in {_differing(settings, ids)}. Put such runs in separate --out folders or add the setting to --rows/--cols"
        )
    part_keys = [k for k in ("dataset", "alpha", "seed", "partition", "num_clients") if k in finals.columns]
    parts = finals.groupby(part_keys, dropna=False)["partition_id"].nunique()
    if (parts > 1).any():
        where = parts[parts > 1].index[0]
        sub = finals.set_index(part_keys).loc[[where]]
        ids = sub.drop_duplicates("partition_id")["run_id"].tolist()
        raise BenchError(
            f"runs of {dict(zip(part_keys, where, strict=True))} were drawn on different partitions (partition_id "
            f"{', '.join(sorted(sub['partition_id'].unique()))}; differing settings: {_differing(settings, ids)}); "
            f"pooling them would compare methods on different data. Use separate --out folders"
        )


def summarize(finals: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Mean, sample std (ddof=1; NaN for one seed) and number of seeds per cell, one row per cell."""
    grouped = finals.groupby(list(keys), dropna=False)["value"]
    out = grouped.agg(mean="mean", std="std", n="count").reset_index()
    out["seeds"] = grouped.apply(lambda v: ",".join(map(str, sorted(finals.loc[v.index, "seed"])))).values
    return out


# --- ordering and labels ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Style:
    """How keys are ordered and named in a rendered table.

    Attributes:
        method_order: methods in this order first, the rest alphabetically after.
        labels: display names for methods and datasets (unknown values are shown as they are).
    """

    method_order: tuple[str, ...] = DEFAULT_METHOD_ORDER
    labels: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LABELS))

    def sort_key(self, key: str, value: object) -> tuple:
        if key == "method":
            from livar_bench.methods import table_order

            text = str(value)
            given = self.method_order
            return (given.index(text), ()) if text in given else (len(given), table_order(text))
        if key == "dataset":
            order = DATASET_ORDER
        else:  # numbers in order, then text (a setting may mix them, e.g. an unset image size)
            number = isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))
            return (0, 0, value, "") if number else (0, 1, 0, str(value))
        text = str(value)
        return (order.index(text), "") if text in order else (len(order), text)

    def label(self, key: str, value: object) -> str:
        if key == "alpha":
            return f"α={value:g}" if isinstance(value, (int, float)) else f"α={value}"
        if key == "num_clients":
            return f"K={value}"
        if key == "method" and str(value) not in self.labels:
            from livar_bench.methods import display_name

            return display_name(str(value))
        if key in ("method", "dataset", "backbone", "partition"):
            return self.labels.get(str(value), str(value))
        if key == "weights_sha256" and isinstance(value, str):
            value = value[:12]  # enough to tell files apart
        return f"{key}={value}"


def parse_labels(items: Sequence[str] | None) -> dict[str, str]:
    """``["livar=LIVAR (ours)", ...]`` -> mapping, with a clear error for malformed items."""
    labels: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--label {item!r}: expected NAME=DISPLAY NAME, e.g. --label livar='LIVAR (ours)'")
        labels[key.strip()] = value.strip()
    return labels


# --- the pivot -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pivot:
    """A mean ± std table: ``mean``/``std``/``n`` frames share one row and column MultiIndex."""

    mean: pd.DataFrame
    std: pd.DataFrame
    n: pd.DataFrame
    rows: tuple[str, ...]
    cols: tuple[str, ...]
    metric: str
    scale: float
    style: Style = field(default_factory=Style)
    split: str = "test"

    def best(self) -> pd.DataFrame:
        """Boolean frame: True where a cell has the best mean of its column (at display precision)."""
        shown = (self.mean * self.scale).round(2)
        target = shown.min() if self.metric in LOWER_IS_BETTER else shown.max()
        return shown.eq(target, axis=1) & shown.notna()

    def seeds_note(self) -> tuple[str, bool]:
        """("n = 3 seeds", True) when every cell has the same n; otherwise per-cell n is shown."""
        values = sorted({int(v) for v in self.n.to_numpy().ravel() if not math.isnan(v)})
        if len(values) == 1:
            return f"mean ± std over n = {values[0]} seed{'s' if values[0] != 1 else ''}", True
        return "mean ± std over n seeds (n given per cell)", False


def groupable(finals: pd.DataFrame, settings: pd.DataFrame | None = None) -> list[str]:
    """Keys a table can be laid out by: the run settings (stored spec.json) and the result columns that
    describe a run, not the seed (pooled) or the ids."""
    keys = {c for c in finals.columns if c not in _NOT_KEYS}
    if settings is not None:
        keys |= {c for c in settings.columns if c not in _NOT_KEYS and c not in NON_IDENTITY_FIELDS}
    return sorted(keys)


def _as_key(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unset"  # an unset setting (e.g. image_size: the default) or one older runs did not record
    return value


def with_settings(finals: pd.DataFrame, keys: Sequence[str], settings: pd.DataFrame | None) -> pd.DataFrame:
    """``finals`` with a column for each key that is a stored setting (pretrained, image_size, lr, ...).

    Raises:
        BenchError: a key that is neither a result column nor a stored setting, naming the valid ones.
    """
    extra = [k for k in dict.fromkeys(keys) if k not in finals.columns]
    if not extra:
        return finals
    valid = groupable(finals, settings)
    for key in extra:
        if settings is None or key not in settings.columns or key in NON_IDENTITY_FIELDS or key in _NOT_KEYS:
            raise BenchError(f"cannot group by {key!r}; choose from {', '.join(valid)} "
                             f"(aliases: {', '.join(f'{a}={k}' for a, k in KEY_ALIASES.items())})")
    out = finals.copy()
    for key in extra:
        out[key] = out["run_id"].map(settings[key].map(_as_key))
    return out


def make_pivot(
    finals: pd.DataFrame, rows: Sequence[str], cols: Sequence[str], metric: str = DEFAULT_METRIC,
    style: Style | None = None, settings: pd.DataFrame | None = None,
) -> Pivot:
    """Pool seeds into cells (after the pooling checks) and lay them out as rows x cols."""
    style = style or Style()
    rows, cols = tuple(KEY_ALIASES.get(k, k) for k in rows), tuple(KEY_ALIASES.get(k, k) for k in cols)
    finals = with_settings(finals, (*rows, *cols), settings)
    if set(rows) & set(cols):
        raise BenchError(f"{', '.join(set(rows) & set(cols))} is both in --rows and --cols")
    check_pooling(finals, (*rows, *cols), settings)
    summary = summarize(finals, (*rows, *cols))

    def table(column: str) -> pd.DataFrame:
        wide = summary.pivot_table(index=list(rows), columns=list(cols), values=column, aggfunc="first", dropna=False)
        wide = _sort_axis(wide, rows, style, axis=0)
        return _sort_axis(wide, cols, style, axis=1)

    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    mean = table("mean").dropna(how="all", axis=0).dropna(how="all", axis=1)  # combinations never run
    split = str(finals["split"].iloc[0]) if "split" in finals and len(finals) else "test"
    return Pivot(mean, table("std").reindex_like(mean), table("n").reindex_like(mean), rows, cols, metric, scale,
                 style, split)


def _sort_axis(frame: pd.DataFrame, keys: Sequence[str], style: Style, axis: int) -> pd.DataFrame:
    index = frame.index if axis == 0 else frame.columns
    tuples = [t if isinstance(t, tuple) else (t,) for t in index]
    order = sorted(range(len(tuples)), key=lambda i: [style.sort_key(k, v) for k, v in zip(keys, tuples[i], strict=True)])
    return frame.iloc[order] if axis == 0 else frame.iloc[:, order]


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
        ax.set_title(style.label("dataset", dataset))
        ax.set_xlabel("Dirichlet α (smaller = more heterogeneous)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"final test {metric}{' (%)' if scale == 100 else ''}")
    axes[0][-1].legend(fontsize=8, title=BAR_NOTE, title_fontsize=8)
    written = _save(fig, folder / f"final_{metric}_vs_alpha")
    plt.close(fig)
    return written


# --- published numbers -----------------------------------------------------------------------------

def load_published(path: str | Path) -> pd.DataFrame:
    """Read and validate a published-numbers CSV (columns method,dataset,alpha,metric,value,source).

    Accuracy values are in percent, as papers print them. The frame may be empty (header only).
    """
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"published numbers file not found: {p}; pass --published FILE with columns "
                         f"{','.join(PUBLISHED_COLUMNS)}")
    try:
        frame = pd.read_csv(p, dtype={"method": str, "dataset": str, "metric": str, "source": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise BenchError(f"{p} is not a readable CSV ({err}); expected columns {','.join(PUBLISHED_COLUMNS)}") from None
    missing = [c for c in PUBLISHED_COLUMNS if c not in frame.columns]
    extra = [c for c in frame.columns if c not in PUBLISHED_COLUMNS]
    if missing or extra:
        raise BenchError(f"{p}: columns must be exactly {','.join(PUBLISHED_COLUMNS)}"
                         f"{'; missing ' + ','.join(missing) if missing else ''}"
                         f"{'; unexpected ' + ','.join(extra) if extra else ''}")
    for column in ("alpha", "value"):
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = frame.index[numbers.isna()].tolist()
        if bad:
            raise BenchError(f"{p}: {column} must be a number on every row; line {bad[0] + 2} has "
                             f"{frame[column].iloc[bad[0]]!r}")
        frame[column] = numbers.astype(float)
    blank = frame.index[frame["source"].fillna("").str.strip() == ""].tolist()
    if blank:
        raise BenchError(f"{p}: line {blank[0] + 2} has no source; say where each number comes from (e.g. 'Table 1')")
    acc = frame[frame["metric"].isin(PERCENT_METRICS)]
    if ((acc["value"] < 0) | (acc["value"] > 100)).any():
        raise BenchError(f"{p}: accuracy values must be in percent (0-100)")
    for column in ("method", "dataset", "metric"):
        frame[column] = frame[column].str.strip().str.lower()
    return frame


def compare_frame(ours: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Ours (mean, std, n per method/dataset/alpha/metric, in displayed units) beside published values.

    Rows present on either side are kept; ``diff`` = ours - published where both exist.
    """
    keys = ["method", "dataset", "alpha", "metric"]
    left = ours.assign(alpha=ours["alpha"].round(6))
    right = published.assign(alpha=published["alpha"].round(6)).rename(columns={"value": "published"})
    merged = left.merge(right, on=keys, how="outer")
    merged["diff"] = merged["mean"] - merged["published"]
    return merged[[*keys, "mean", "std", "n", "published", "diff", "source"]].sort_values(keys).reset_index(drop=True)


def ours_summary(finals_by_metric: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Mean/std/n per (method, dataset, alpha, metric) in displayed units (percent for accuracy)."""
    parts = []
    for metric, finals in finals_by_metric.items():
        check_pooling(finals, ("method", "dataset", "alpha"))
        summary = summarize(finals, ("method", "dataset", "alpha"))
        scale = 100.0 if metric in PERCENT_METRICS else 1.0
        summary[["mean", "std"]] = summary[["mean", "std"]] * scale
        parts.append(summary.assign(metric=metric))
    return pd.concat(parts, ignore_index=True)


def format_pm(mean: float, std: float, n: float) -> str:
    """``85.31 ± 0.42 (n=3)`` (or ``–`` when missing)."""
    if mean is None:
        return "–"
    return _cell(mean, std, n, scale=1.0, show_n=True, pm="±")
