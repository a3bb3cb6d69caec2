"""Run options are declared once: every run setting is reachable from run, sweep, tune and explain."""

from __future__ import annotations

import pytest
import typer.main

from livar_bench.cli import app
from livar_bench.cli.options import NOT_OPTIONS, RUN_OPTIONS, run_settings
from livar_bench.config import RunSpec

# Where a command gives a setting through an option of its own (a list for a grid, or a fixed value).
OWN = {
    "run": {"method": "method"},
    "sweep": {"dataset": "datasets", "alpha": "alphas", "seed": "seeds", "method": "methods"},
    "tune": {"seed": "seeds", "method": "method"},
    "explain": {"method": None},  # explain always probes around FedAvg
}


def _params(command: str) -> dict[str, object]:
    click_app = typer.main.get_command(app)
    return {p.name: p for p in click_app.commands[command].params}


@pytest.mark.parametrize("command", sorted(OWN))
def test_every_run_setting_is_reachable(command: str) -> None:
    params = _params(command)
    by_field = {field: name for name, (_, field) in RUN_OPTIONS.items()}
    for field in RunSpec.model_fields:
        option = OWN[command].get(field, by_field.get(field))
        if field in OWN[command] and option is None:
            continue
        assert option is not None, f"RunSpec.{field} has no run option (add it to cli/options.RUN_OPTIONS)"
        assert option in params, f"{command} cannot set RunSpec.{field} (expected --{option.replace('_', '-')})"


def test_options_map_to_fields_and_only_given_ones_are_passed() -> None:
    assert run_settings(clients=4, epochs=2, iid=True, lora_targets="attn.qkv, mlp.fc1", rounds=None) == {
        "num_clients": 4, "local_epochs": 2, "partition": "iid", "lora_targets": ("attn.qkv", "mlp.fc1")}
    assert set(NOT_OPTIONS) <= set(RunSpec.model_fields)


def test_help_shows_the_runspec_default() -> None:
    params = _params("run")
    assert "[default: 0.5]" in params["alpha"].help and "[default: 10]" in params["clients"].help


def test_help_defaults_are_not_escaped() -> None:
    from typer.testing import CliRunner

    for command in ("run", "sweep", "table", "ls"):
        text = CliRunner().invoke(app, [command, "--help"]).output
        assert "\\[" not in text, command  # typer < 0.21 escaped "[default: ...]" even with markup off
