"""``livar-bench status``: how far the sweeps in a results folder have got (safe while they run)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer

from livar_bench.cli import app
from livar_bench.errors import BenchError


@app.command()
def status(
    out: Path = typer.Option(Path("results"), help="Results folder holding sweeps/ and runs/."),
    runs: bool = typer.Option(False, "--runs", help="Also list every run that is not done."),
) -> None:
    """Done / running / interrupted / pending runs of every sweep recorded under OUT.

    Example: livar-bench status --out results/ --runs
    """
    from rich.console import Console
    from rich.table import Table

    from livar_bench.store import RunStore

    store = RunStore(out)
    manifests = sorted((Path(out) / "sweeps").glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not manifests:
        raise BenchError(f"no sweeps recorded under {Path(out) / 'sweeps'}; start one with `livar-bench sweep --out {out}`")
    table = Table("sweep", "name", "runs", "done", "running", "interrupted", "pending")
    unfinished: list[tuple[str, str, int | None]] = []
    for path in manifests:
        data = json.loads(path.read_text())
        states = {run_id: store.state(run_id) for run_id in data["run_ids"]}
        counts = Counter(state for state, _ in states.values())
        table.add_row(path.stem, str(data.get("config", {}).get("name") or "-"), str(len(states)),
                      *(str(counts.get(k, 0)) for k in ("done", "running", "interrupted", "pending")))
        unfinished += [(run_id, state, last) for run_id, (state, last) in states.items() if state != "done"]
    console = Console(markup=False)
    console.print(table)
    if runs:
        for run_id, state, last in dict.fromkeys(unfinished):
            spec_path = store.partial_dir(run_id) / "spec.json"
            what = ""
            if spec_path.is_file():
                spec = json.loads(spec_path.read_text())
                what = f"  {spec['method']} {spec['dataset']} alpha={spec['alpha']:g} seed={spec['seed']}"
            after = f" after round {last}" if last is not None else ""
            console.print(f"{run_id}  {state}{after}{what}")
