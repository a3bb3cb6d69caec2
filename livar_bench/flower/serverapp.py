"""The Flower ServerApp of a real deployment (``flwr run`` against a SuperLink; see examples/flower/).

It runs the harness's round loop (``federation.run_federation``) with the Flower engine on the grid it
is given: the same strategy, checkpoints, evaluation and tidy rows as ``livar-bench run --engine
flower``, written to the ``out`` folder on the machine that runs the ServerApp. The server evaluates
on the test split, so that machine needs the dataset (``data-root``) as well.

Run settings and which value wins (``--run-config`` over the YAML ``config`` over the App's
``[tool.flwr.app.config]`` over RunSpec's defaults): ``settings.py``. The ServerApp logs where each
setting came from and the absolute results folder, then waits (``node-wait-s``) until one SuperNode
per client has connected, saying how many it waits for and how many are there
(``strategy.connect_clients``). A setting or deployment problem ends the run with one ``error:`` line
in the run's log (no traceback) and leaves the results folder as it was.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from livar_bench.errors import BenchError
from livar_bench.flower.settings import AppSettings, resolve
from livar_bench.flower.strategy import connect_clients

app = ServerApp()


class OneLineErrors(logging.Filter):
    """Flower logs a ServerApp's exception with its traceback; a ``BenchError`` (a setting or deployment
    problem the user fixes) becomes one ``error:`` line instead, as on the command line."""

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else None
        if isinstance(err, BenchError):
            record.msg, record.args = "error: %s", (str(err),)
            record.exc_info, record.exc_text = None, None
        return True


def one_line_errors() -> None:
    """Install ``OneLineErrors`` on Flower's logger (once per process: a ServerApp process runs one run)."""
    logger = logging.getLogger("flwr")
    if not any(isinstance(f, OneLineErrors) for f in logger.filters):
        logger.addFilter(OneLineErrors())


def run_overrides(grid: Grid) -> dict[str, Any]:
    """The values given to ``flwr run --run-config`` (the run's override config; none outside a run)."""
    try:
        return dict(grid.run.override_config)
    except (AttributeError, TypeError):  # no run set on this grid
        return {}


def app_dir(grid: Grid) -> Path | None:
    """The folder Flower installed this run's App in (where a relative ``config`` lies), if known."""
    from flwr.common.config import get_project_dir

    try:
        run = grid.run
    except (AttributeError, TypeError):
        return None
    if not run.fab_id or run.fab_id.count("/") != 1:  # a ServerApp started without an App bundle
        return None
    return get_project_dir(run.fab_id, run.fab_version, run.fab_hash)


def _progress(kind: str, **event: Any) -> None:
    """Round loop events as lines of the run's log (``flwr run --stream`` / ``flwr log`` show them)."""
    if kind == "resume":
        log(20, "livar-bench: resuming run %s after round %s", event["run_id"], event["round"])
    elif kind == "round":
        test = ", ".join(f"{k} {v:.4f}" for k, v in event["metrics"].items())
        log(20, "livar-bench: round %s done: test %s", event["round"], test)
    elif kind == "warning":
        log(30, "livar-bench: %s", event["message"])


def serve(grid: Grid, settings: AppSettings) -> Any:
    """Run the settings' experiment on ``grid``: wait for the SuperNodes, then the round loop."""
    from livar_bench.federation import run_federation
    from livar_bench.flower.engine import InGrid
    from livar_bench.store import RunStore, nothing_left_on_failure

    spec = settings.spec
    log(20, "livar-bench: run %s: %s on %s, %d clients, %d rounds; results folder %s", spec.run_id, spec.method,
        spec.dataset, spec.num_clients, spec.rounds, settings.out)
    log(20, "livar-bench: settings from %s (the rest: RunSpec defaults)", settings.describe())
    if RunStore(settings.out).is_done(spec.run_id):  # nothing to train: no need to wait for nodes
        return run_federation(spec, settings.out)
    nodes = connect_clients(grid, spec.num_clients, settings.node_wait_s)
    with nothing_left_on_failure(settings.out, [spec.run_id]):
        return run_federation(spec, settings.out, on_event=_progress,
                              launcher=InGrid(grid, nodes=nodes, node_wait_s=settings.node_wait_s))


@app.main()
def main(grid: Grid, context: Context) -> None:
    one_line_errors()
    settings = resolve(dict(context.run_config), run_overrides(grid), app_dir=app_dir(grid))
    outcome = serve(grid, settings)
    done = "already done" if outcome.skipped else "final test"
    print(f"{settings.spec.method} on {settings.spec.dataset}: {done} {outcome.final} (run {outcome.run_id}, "
          f"{outcome.run_dir})")
