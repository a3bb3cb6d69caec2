"""The Flower ServerApp of a real deployment (``flwr run`` against a SuperLink; see examples/flower/).

It runs the harness's round loop (``federation.run_federation``) with the Flower engine on the grid it
is given: the same strategy, checkpoints, evaluation and tidy rows as ``livar-bench run --engine
flower``, written to the ``out`` folder on the machine that runs the ServerApp. The server evaluates
on the test split, so that machine needs the dataset (``data-root``) as well.

Run settings come from the app's run config (``[tool.flwr.app.config]`` or ``flwr run --run-config``):
any RunSpec field, with ``-`` or ``_`` (``num-clients = 4``, ``method = "livar+ccvr"``), plus ``out``
(the results folder) and ``config`` (a YAML file of run settings that the other keys override).
Unknown keys are errors; an empty string means "not set" (TOML has no null).
"""

from __future__ import annotations

from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from livar_bench.config import RunSpec, load_yaml, make_spec
from livar_bench.errors import BenchError

app = ServerApp()
APP_KEYS = {"out", "config"}


def spec_from_run_config(run_config: dict[str, Any]) -> tuple[RunSpec, str]:
    """(run spec, results folder) from a Flower run config."""
    values: dict[str, Any] = {}
    if run_config.get("config"):
        values.update(load_yaml(str(run_config["config"])))
    for key, value in run_config.items():
        field = key.replace("-", "_")
        if key in APP_KEYS or value == "":  # "" = not set (TOML has no null)
            continue
        if field not in RunSpec.model_fields:
            raise BenchError(f"unknown run-config key {key!r}; use RunSpec fields (e.g. method, dataset, "
                             f"num-clients, rounds) or {', '.join(sorted(APP_KEYS))}")
        values[field] = value
    return make_spec(values), str(run_config.get("out") or "results")


@app.main()
def main(grid: Grid, context: Context) -> None:
    from livar_bench.federation import run_federation
    from livar_bench.flower.engine import InGrid

    spec, out = spec_from_run_config(dict(context.run_config))
    outcome = run_federation(spec, out, launcher=InGrid(grid))
    print(f"{spec.method} on {spec.dataset}: final test {outcome.final} (run {outcome.run_id}, {outcome.run_dir})")
