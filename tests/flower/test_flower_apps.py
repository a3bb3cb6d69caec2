"""The Flower deployment example and the apps' settings (fast; the end-to-end runs are in test_flower_engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: flwr brings tomli
    import tomli as tomllib

from livar_bench.errors import BenchError

pytest.importorskip("flwr")
from livar_bench.flower.clientapp import InjectedFailure, _maybe_fail, node_spec  # noqa: E402
from livar_bench.flower.serverapp import spec_from_run_config  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flower"


def test_example_is_a_valid_flower_app_whose_components_are_the_harness_apps(monkeypatch):
    from flwr.cli.config_utils import load_and_validate

    monkeypatch.syspath_prepend(str(EXAMPLE))
    config, _ = load_and_validate(EXAMPLE / "pyproject.toml", check_module=True)
    components = config["tool"]["flwr"]["app"]["components"]
    from livar_flower import apps

    import livar_bench.flower.clientapp as clientapp
    import livar_bench.flower.serverapp as serverapp

    assert components == {"serverapp": "livar_flower.apps:server_app", "clientapp": "livar_flower.apps:client_app"}
    assert apps.server_app is serverapp.app and apps.client_app is clientapp.app


def test_example_run_config_is_a_valid_run():
    run_config = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    spec, out = spec_from_run_config(run_config)
    assert (spec.method, spec.dataset, spec.num_clients, spec.rounds, out) == ("livar+ccvr", "digits", 4, 2, "results")


def test_run_config_refuses_unknown_keys():
    with pytest.raises(BenchError, match="unknown run-config key 'clients'"):
        spec_from_run_config({"clients": 4})


def test_node_settings_change_where_not_what():
    spec, _ = spec_from_run_config({"dataset": "digits", "num-clients": 3})
    mine = node_spec(spec.model_dump_json(), {"partition-id": 1, "data-root": "/srv/data", "device": "cpu"})
    assert (mine.data_root, mine.device) == ("/srv/data", "cpu")
    assert mine.run_id == spec.run_id


def test_fault_hook_fires_only_for_its_round_and_client(monkeypatch):
    monkeypatch.setenv("LIVAR_BENCH_FLOWER_FAIL", "2:1, 3:0")
    _maybe_fail(1, 1)
    _maybe_fail(2, 0)
    with pytest.raises(InjectedFailure, match="client 1 failed in round 2"):
        _maybe_fail(2, 1)
    with pytest.raises(InjectedFailure):
        _maybe_fail(3, 0)
