"""The Flower deployment example and the apps' settings (fast; the end-to-end runs are in test_flower_engine
and test_flower_deployment).

Settings precedence, highest first: ``flwr run --run-config``, the YAML ``config``, the App's
``[tool.flwr.app.config]``, RunSpec's defaults. The run configs here are built by Flower's own
``get_fused_config_from_dir`` from the example's pyproject.toml, as the ServerApp receives them.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: flwr brings tomli
    import tomli as tomllib

from livar_bench.config import RunSpec
from livar_bench.errors import BenchError

pytest.importorskip("flwr")
from flwr.app import ConfigRecord, Message, RecordDict  # noqa: E402
from flwr.common.config import get_fused_config_from_dir  # noqa: E402

from livar_bench.flower.clientapp import InjectedFailure, _maybe_fail, node_spec  # noqa: E402
from livar_bench.flower.serverapp import OneLineErrors  # noqa: E402
from livar_bench.flower.settings import APP_DEFAULTS, resolve, run_config_keys  # noqa: E402
from livar_bench.flower.strategy import QUERY_PARTITION, connect_clients  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flower"


def _app_config() -> dict:
    return tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]


def _flower_run(overrides: dict, app_dir: Path = EXAMPLE, home: Path | None = None):
    """The settings the ServerApp resolves for ``flwr run --run-config <overrides>`` of the App in ``app_dir``."""
    fused = get_fused_config_from_dir(app_dir, overrides)  # Flower drops override keys the App does not list
    return resolve(fused, overrides, app_dir=app_dir, home=home)


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


def test_example_lists_every_run_setting_and_the_app_keys():
    keys = list(_app_config())
    assert sorted(keys) == sorted(run_config_keys())
    assert {k.replace("-", "_") for k in keys} >= set(RunSpec.model_fields)


def test_example_run_config_is_a_valid_run(tmp_path):
    settings = _flower_run({}, home=tmp_path)
    spec = settings.spec
    assert (spec.method, spec.dataset, spec.num_clients, spec.rounds) == ("livar+ccvr", "digits", 2, 2)
    assert settings.out == tmp_path / "livar-bench-results" and settings.node_wait_s == 300
    assert settings.config_file is None


# A valid value other than the example's for every RunSpec field, as `flwr run --run-config` passes it
# (TOML scalars; tuples as comma-separated text, as the CLI takes them), and the value RunSpec then holds.
NEW_VALUES = {
    "dataset": ("synthetic", "synthetic"), "data_root": ("/srv/data", "/srv/data"),
    "cache_dir": ("/srv/cache", "/srv/cache"), "download": (True, True), "max_train_samples": (160, 160),
    "max_test_samples": (80, 80), "partition": ("iid", "iid"), "alpha": (0.1, 0.1), "num_clients": (3, 3),
    "min_client_samples": (2, 2), "participation": (0.5, 0.5), "val_fraction": (0.2, 0.2),
    "backbone": ("livar_micro_vit", "livar_micro_vit"), "pretrained": (False, False),
    "weights": ("/srv/w.safetensors", "/srv/w.safetensors"), "image_size": (448, 448), "lora_rank": (4, 4),
    "lora_alpha": (8.0, 8.0), "lora_targets": ("attn.qkv, mlp.fc1", ("attn.qkv", "mlp.fc1")),
    "client_ranks": ("4,4", (4, 4)), "rank_scale": ("constant", "constant"), "rounds": (5, 5), "local_epochs": (3, 3), "batch_size": (8, 8),
    "lr": (1e-4, 1e-4), "weight_decay": (0.0, 0.0), "precision": ("fp32", "fp32"), "method": ("fedavg", "fedavg"),
    "seed": (7, 7), "device": ("cuda:1", "cuda:1"), "eval_batch_size": (64, 64), "eval_local": (True, True),
    "pack": (4, 4), "local_work": ("epochs[min=1,max=2]", "epochs[max=2]"), "stragglers": (0.2, 0.2),
    "straggler_work": (0.3, 0.3), "dropout": (0.1, 0.1), "deadline": (2.0, 2.0),
    # settings that need another one changed with them (their own validation says so)
    "heldout_domains": ("clipart, sketch", ("clipart", "sketch"), {"dataset": "imagenet-r"}),
    "secure_aggregation": (True, True, {"method": "fedavg"}),
}


@pytest.mark.parametrize("field", sorted(RunSpec.model_fields))
def test_every_runspec_field_is_reachable_with_run_config(field, tmp_path):
    assert field in NEW_VALUES, f"RunSpec.{field} is new: add a value here (and a key to the example's pyproject)"
    given, held, *extra = NEW_VALUES[field]
    before = _flower_run({}, home=tmp_path).spec
    after = _flower_run({**(extra[0] if extra else {}), field.replace("_", "-"): given}, home=tmp_path)
    assert getattr(before, field) != held
    assert getattr(after.spec, field) == held
    assert after.sources[field.replace("_", "-")] == "run-config"


def test_cli_options_reach_the_same_settings_and_renamed_ones_are_pointed_to():
    from livar_bench.cli.options import RUN_OPTIONS

    keys = set(run_config_keys())
    renamed = {}
    for option, (_, field) in RUN_OPTIONS.items():
        assert field.replace("_", "-") in keys, option
        if option != field:
            renamed[option] = field
    assert renamed == {"clients": "num_clients", "epochs": "local_epochs", "iid": "partition"}
    for option in ("clients", "epochs"):  # the CLI's names are pointed to their run-config key
        with pytest.raises(BenchError, match=f"did you mean {renamed[option].replace('_', '-')}"):
            resolve({option: 2})
    comment = (EXAMPLE / "pyproject.toml").read_text()
    assert "--clients, --epochs and --iid are num-clients, local-epochs and partition" in comment


def _app_with_yaml(tmp_path: Path, yaml_text: str) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(EXAMPLE / "pyproject.toml", app / "pyproject.toml")
    (app / "quick.yaml").write_text(yaml_text)
    return app


def test_precedence_run_config_over_yaml_over_app_config_over_defaults(tmp_path):
    app = _app_with_yaml(tmp_path, "backbone: livar_micro_vit\nlora_rank: 2\nlora_alpha: 2.0\nmax_train_samples: 160\n")
    assert _app_config()["backbone"] == "livar_tiny_vit" and _app_config()["lora-rank"] == 16

    plain = _flower_run({}, app, tmp_path).spec  # app config over RunSpec defaults
    assert (plain.backbone, plain.lora_rank, plain.num_clients, plain.max_train_samples) == ("livar_tiny_vit", 16, 2, None)
    assert RunSpec().num_clients == 10

    yaml = _flower_run({"config": "quick.yaml"}, app, tmp_path)  # the YAML over the app config (the old bug)
    assert (yaml.spec.backbone, yaml.spec.lora_rank, yaml.spec.max_train_samples) == ("livar_micro_vit", 2, 160)
    assert yaml.spec.method == "livar+ccvr" and yaml.config_file == app / "quick.yaml"
    assert yaml.sources["backbone"] == "config file" and yaml.sources["method"] == "app config"

    given = _flower_run({"config": "quick.yaml", "lora-rank": 4, "max-train-samples": 200}, app, tmp_path)
    assert (given.spec.backbone, given.spec.lora_rank, given.spec.max_train_samples) == ("livar_micro_vit", 4, 200)
    # Given explicitly, a value wins even when it equals the app config's (16) and the YAML says otherwise.
    same = _flower_run({"config": "quick.yaml", "lora-rank": 16}, app, tmp_path)
    assert same.spec.lora_rank == 16 and same.sources["lora-rank"] == "run-config"
    # "" = not set: the next level down applies.
    unset = _flower_run({"config": "quick.yaml", "max-train-samples": ""}, app, tmp_path)
    assert unset.spec.max_train_samples == 160
    assert "config file " + str(app / "quick.yaml") + ": backbone" in given.describe()

    # A YAML named in the app config itself also beats the app config's other values.
    text = (app / "pyproject.toml").read_text().replace('config = ""', 'config = "quick.yaml"')
    (app / "pyproject.toml").write_text(text)
    assert _flower_run({}, app, tmp_path).spec.backbone == "livar_micro_vit"
    assert _flower_run({"backbone": "livar_tiny_vit"}, app, tmp_path).spec.backbone == "livar_tiny_vit"


def test_the_example_quick_yaml_is_the_same_run_as_the_cli_with_that_yaml(tmp_path):
    from livar_bench.cli.options import spec_values
    from livar_bench.config import make_spec

    flower = _flower_run({"config": "quick.yaml"}, home=tmp_path)
    cli = make_spec(spec_values(EXAMPLE / "quick.yaml", {}))
    assert flower.spec == cli and flower.spec.run_id == cli.run_id
    assert (cli.backbone, cli.lora_rank) != (_app_config()["backbone"], _app_config()["lora-rank"])


def test_paths_out_and_config(tmp_path):
    assert _flower_run({"out": "res"}, home=tmp_path).out == tmp_path / "res"
    assert _flower_run({"out": str(tmp_path / "abs")}, home=Path("/nowhere")).out == tmp_path / "abs"
    with pytest.raises(BenchError, match=f"config file not found: {EXAMPLE / 'missing.yaml'}"):
        _flower_run({"config": "missing.yaml"})


@pytest.mark.parametrize(("overrides", "yaml_text", "message"), [
    ({"node-wait-s": 0}, "", "node-wait-s = 0: give the seconds"),
    ({"node-wait-s": "soon"}, "", "node-wait-s = 'soon'"),
    ({"config": "quick.yaml"}, "num-clients: 3\n", "unknown setting\\(s\\) 'num-clients'"),
    ({"rounds": 0}, "", "invalid run settings: rounds"),
    ({"client-ranks": "4,x"}, "", "client-ranks = '4,x': expected comma-separated"),
])
def test_bad_settings_are_one_line_errors(tmp_path, overrides, yaml_text, message):
    app = _app_with_yaml(tmp_path, yaml_text)
    with pytest.raises(BenchError, match=message) as err:
        _flower_run(overrides, app, tmp_path)
    assert "\n" not in str(err.value)


def test_run_config_refuses_unknown_keys_and_both_spellings():
    with pytest.raises(BenchError, match="unknown run-config key 'colour'"):
        resolve({"colour": 4})
    with pytest.raises(BenchError, match="sets 'num-clients' twice"):
        resolve({"num-clients": 4, "num_clients": 4})
    assert resolve({"num_clients": 3}).spec.num_clients == 3  # either spelling works alone
    assert set(APP_DEFAULTS) == {"out", "config", "node-wait-s"}


def test_node_settings_change_where_not_what():
    spec = resolve({"dataset": "digits", "num-clients": 3}).spec
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


def _logged(exc: BaseException) -> str:
    logger = logging.getLogger(f"test-one-line-{id(exc)}")
    logger.propagate = False
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(logging.Formatter().format(record))  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.addFilter(OneLineErrors())
    try:
        raise exc
    except BaseException as err:  # noqa: BLE001 - logged as Flower logs a ServerApp's exception
        logger.error("ServerApp raised an exception", exc_info=err)
    return "\n".join(lines)


def test_a_bench_error_is_logged_as_one_line_and_other_errors_keep_their_traceback():
    assert _logged(BenchError("only 2 of the 3 SuperNodes ...")) == "error: only 2 of the 3 SuperNodes ..."
    text = _logged(ValueError("a bug"))
    assert text.startswith("ServerApp raised an exception\nTraceback") and "ValueError: a bug" in text


@pytest.fixture
def task_identity():
    """Messages need the identity of the running task, which Flower sets in a real run."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 7, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


class Nodes:
    """A grid's node side for ``connect_clients``: connected node ids, each answering the partition query
    as the ClientApp does (a ConfigRecord ``partition`` with its ``partition-id``)."""

    def __init__(self, partition_of: dict[int, int]) -> None:
        self.partition_of = partition_of
        self.sent: list[int] = []

    def get_node_ids(self) -> list[int]:
        return list(self.partition_of)

    def send_and_receive(self, messages, timeout):
        replies = []
        for msg in messages:
            self.sent.append(msg.metadata.dst_node_id)
            record = ConfigRecord({"partition-id": self.partition_of[msg.metadata.dst_node_id]})
            replies.append(Message(RecordDict({QUERY_PARTITION: record}), reply_to=msg))  # from the node asked
        return replies


def test_too_few_supernodes_stop_after_the_wait_with_one_line_and_no_message_sent():
    grid, said = Nodes({11: 0, 12: 1}), []
    start = time.monotonic()
    with pytest.raises(BenchError, match=r"only 2 of the 3 SuperNodes this run needs connected within 1.5 s: "
                       r"start one SuperNode per partition id 0 \.\. 2 \(num-clients must equal") as err:
        connect_clients(grid, 3, 1.5, say=said.append, every_s=0.5)
    assert 1.5 <= time.monotonic() - start < 3.0
    assert "\n" not in str(err.value) and grid.sent == []
    assert said and all("waiting for 3 SuperNodes (partition ids 0 .. 2): 2 connected" in s for s in said)


def test_connected_supernodes_are_mapped_by_partition_id_and_duplicates_refused(task_identity):
    assert connect_clients(Nodes({11: 1, 12: 0}), 2, 5.0, say=lambda _: None) == {0: 12, 1: 11}
    with pytest.raises(BenchError, match="two SuperNodes report partition id 0"):
        connect_clients(Nodes({11: 0, 12: 0}), 2, 5.0, say=lambda _: None)
    with pytest.raises(BenchError, match=r"no node reported partition id\(s\) 1 within 1 s"):
        connect_clients(Nodes({11: 0, 12: 5}), 2, 1.0, say=lambda _: None)
