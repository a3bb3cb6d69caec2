"""``livar-bench status``: how far the sweeps in a results folder have got (safe while they run)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import typer

from livar_bench.cli import app
from livar_bench.errors import BenchError

STATES = ("done", "running", "interrupted", "pending", "damaged")


def _is_record(data: object) -> bool:
    return (isinstance(data, dict) and isinstance(data.get("run_ids"), list)
            and all(isinstance(r, str) for r in data["run_ids"]) and isinstance(data.get("config", {}), dict))


def read_sweep_records(out: Path) -> list[tuple[str, str, list[str]]]:
    """(sweep id, name, run ids) of every sweep recorded under ``<out>/sweeps``, oldest first; a damaged
    record is set aside with a warning (rerunning its sweep writes it again)."""
    from livar_bench.store import DamagedFile, read_json, set_aside

    records = []
    paths = []
    for path in (Path(out) / "sweeps").glob("*.json"):
        try:
            paths.append((path.stat().st_mtime, path))
        except OSError:
            continue
    for _, path in sorted(paths):
        try:
            data = read_json(path, _is_record)
        except (DamagedFile, OSError) as err:
            set_aside(path, str(err), "rerunning its sweep records it again")
            continue
        records.append((path.stem, str(data.get("config", {}).get("name") or "-"), data["run_ids"]))
    return records


def other_runs(store: object, listed: set[str]) -> list[str]:
    """Runs in the folder that no sweep record lists (started by `livar-bench run`, or by a lost sweep)."""
    found: set[str] = set()
    for folder in (store.runs, store.runs / ".partial"):  # type: ignore[attr-defined]
        try:
            found |= {e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")
                      and "." not in e.name}
        except OSError:
            continue
    return sorted(found - listed)


@app.command()
def status(
    out: Path = typer.Option(Path("results"), help="Results folder holding sweeps/ and runs/."),
    runs: bool = typer.Option(False, "--runs", help="Also list every run that is not done."),
) -> None:
    """Done / running / interrupted / pending / damaged runs of every sweep recorded under OUT, and of
    runs started by `livar-bench run`.

    Example: livar-bench status --out results/ --runs
    """
    from rich.console import Console
    from rich.table import Table

    from livar_bench.store import RunStore

    store = RunStore(out)
    records = read_sweep_records(out)
    listed = {run_id for _, _, ids in records for run_id in ids}
    others = other_runs(store, listed)
    if others:
        records.append(("-", "runs outside any sweep", others))
    if not records:
        raise BenchError(f"no sweeps or runs recorded under {out}; start one with `livar-bench sweep --out {out}`")
    table = Table("sweep", "name", "runs", *STATES)
    unfinished: list[tuple[str, str, int | None]] = []
    for sweep_id, name, ids in records:
        states = {run_id: store.state(run_id) for run_id in ids}
        counts = Counter(state for state, _ in states.values())
        table.add_row(sweep_id, name, str(len(states)), *(str(counts.get(k, 0)) for k in STATES))
        unfinished += [(run_id, state, last) for run_id, (state, last) in states.items() if state != "done"]
    store.save_index()  # later commands re-verify only runs whose files change
    console = Console(markup=False)
    console.print(table)
    for run_id, state, _ in dict.fromkeys(unfinished):  # always: a damaged result is one the user loses
        if state == "damaged":
            console.print(f"damaged: {run_id}{_describe(store, run_id)}: {store.problem(run_id)}; the next sweep "
                          "(or run) with its settings reruns it", soft_wrap=True)
    if runs:
        for run_id, state, last in dict.fromkeys(unfinished):
            after = f" after round {last}" if last is not None else ""
            console.print(f"{run_id}  {state}{after}{_describe(store, run_id)}")


def _describe(store: object, run_id: str) -> str:
    """``  <method> <dataset> alpha=<a> seed=<s>`` from the run's spec.json (partial or finished), or ''."""
    from livar_bench.store import DamagedFile, read_json

    for folder in (store.partial_dir(run_id), store.run_dir(run_id)):  # type: ignore[attr-defined]
        try:
            spec = read_json(folder / "spec.json", lambda d: isinstance(d, dict))
            return f"  {spec['method']} {spec['dataset']} alpha={float(spec['alpha']):g} seed={spec['seed']}"
        except (OSError, DamagedFile, KeyError, TypeError, ValueError):
            continue
    return ""
