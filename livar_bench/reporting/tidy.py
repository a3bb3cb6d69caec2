"""Run records -> tidy rows: every finished run of a results folder, read incrementally, and its settings.

``collect(out)`` gives one row per (run, round, split, metric). The rows of the runs already read are
cached under ``<out>/cache/tidy.pkl`` with the signatures of their files, so a folder of thousands of
runs is re-read only where runs changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from livar_bench.errors import BenchError
from livar_bench.reporting.pivot import DEFAULT_METRIC
from livar_bench.reporting.stats import select_values
from livar_bench.store import RunStore, atomic_file, write_csv

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


def final_values(frame: pd.DataFrame, metric: str = DEFAULT_METRIC, split: str = "test") -> pd.DataFrame:
    """One row per run: ``metric`` on ``split`` at the run's last round (column ``value``)."""
    if not ((frame["metric"] == metric) & (frame["split"] == split)).any():
        known = sorted(set(frame.loc[frame["split"] == split, "metric"]))
        raise BenchError(f"no {split} metric {metric!r} in the results; available: {', '.join(known) or 'none'}")
    return select_values(frame, metric, split, "last").reset_index(drop=True)
