"""The Flower ClientApp: a client trains with the harness's own client phase and replies with its update.

Each node is one client: its id is the node's ``partition-id`` (set by the simulation engine, or by
``flower-supernode --node-config "partition-id=3"`` in a deployment). The server's instruction carries
the tensors this client starts from (the global ones, or its own start for a personalised method,
``Method.client_start``) and the run's settings (``run-spec``); the client rebuilds the run once per process
(dataset, its own partition, shared backbone; ``federation.setup_run``), trains with the local
engine's ``federation.train_round_clients`` (``client.phase.train_clients`` at the client's LoRA rank)
under the same seeding (seed, round, client id), leaving the tensors the method's ``client_side()``
freezes unchanged, and sends back its tensors plus exactly the signals the method requires
(``codec.encode_update``). A stage's extra client round (EVALUATE messages) is answered the same way
the local engine answers it (``client.extra_round``).

Node settings a SuperNode may give (``--node-config``): ``partition-id`` (required), ``data-root``,
``cache-dir`` and ``device`` (where this node's data lies and where it trains; they do not change the run).

Test hook: ``LIVAR_BENCH_FLOWER_FAIL="ROUND:CLIENT[,ROUND:CLIENT...]"`` makes those clients raise in
those rounds (the fault tests; a real failure takes the same path).
"""

from __future__ import annotations

import os
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from livar_bench.client.phase import base_deltas_applied
from livar_bench.config import RunSpec
from livar_bench.flower.codec import decode_download, decode_inputs, encode_signals, encode_update
from livar_bench.flower.strategy import QUERY_PARTITION
from livar_bench.types import ExtraRound, Signal

FAIL_ENV = "LIVAR_BENCH_FLOWER_FAIL"
NODE_SETTINGS = {"data-root": "data_root", "cache-dir": "cache_dir", "device": "device"}

app = ClientApp()
_SETUPS: dict[tuple[str, str], Any] = {}  # one setup per run and node settings, kept for the process


class InjectedFailure(RuntimeError):
    """Raised by the ``LIVAR_BENCH_FLOWER_FAIL`` test hook."""


def partition_id(context: Context) -> int:
    if "partition-id" not in context.node_config:
        raise ValueError("this SuperNode has no partition id: start it with --node-config 'partition-id=N'")
    return int(context.node_config["partition-id"])


def node_spec(text: str, node_config: dict[str, Any]) -> RunSpec:
    """The run's spec as this node runs it (its own data root, cache and device)."""
    spec = RunSpec.model_validate_json(text)
    changes = {field: node_config[key] for key, field in NODE_SETTINGS.items() if key in node_config}
    return spec.replace(**changes) if changes else spec


def _setup(spec: RunSpec) -> Any:
    from livar_bench.federation import setup_run

    key = (spec.run_id, spec.model_dump_json())
    if key not in _SETUPS:
        _SETUPS.clear()  # one run at a time per process
        _SETUPS[key] = setup_run(spec)
    return _SETUPS[key]


def _maybe_fail(round_: int, client: int) -> None:
    for item in os.environ.get(FAIL_ENV, "").split(","):
        if item.strip() and tuple(int(x) for x in item.split(":")) == (round_, client):
            raise InjectedFailure(f"client {client} failed in round {round_} ({FAIL_ENV})")


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Report this node's client id (its partition id)."""
    return Message(RecordDict({QUERY_PARTITION: ConfigRecord({"partition-id": partition_id(context)})}),
                   reply_to=msg)


@app.evaluate()
def extra_round(msg: Message, context: Context) -> Message:
    """One extra client round a stage asked for (``types.ExtraRound``, e.g. ``ccvr[features=global]``): this
    client's signals under the model in ``msg`` (``client.extra_round.ExtraRoundPass``, as the local engine
    runs it)."""
    from livar_bench.client.extra_round import ExtraRoundPass
    from livar_bench.federation.kernel import local_settings

    config = msg.content["config"]
    client = partition_id(context)
    spec = node_spec(str(config["run-spec"]), dict(context.node_config))
    s = _setup(spec)
    params, deltas = decode_download(msg.content["global"], s.device)
    request = ExtraRound(params, frozenset(Signal(v) for v in str(config["signals"]).split(",") if v), deltas)
    reply = ExtraRoundPass(s.model, {client: s.clients[client]}, s.eval_tf, s.bundle.num_classes,
                           local_settings(s), seed=spec.seed, round_=int(config["server-round"]))(request)[0]
    return Message(encode_signals(reply.signals), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train this client for one round from the global tensors in ``msg``; reply with its update."""
    from livar_bench.federation import train_round_clients
    from livar_bench.federation.kernel import local_settings

    config = msg.content["config"]
    round_, client = int(config["server-round"]), partition_id(context)
    _maybe_fail(round_, client)
    spec = node_spec(str(config["run-spec"]), dict(context.node_config))
    if not 0 <= client < spec.num_clients:
        raise ValueError(f"partition id {client} is outside this run's clients 0..{spec.num_clients - 1}")
    s = _setup(spec)
    method = spec.method_spec.build()
    params, deltas = decode_download(msg.content["global"], s.device)
    inputs = decode_inputs(msg.content["global"], s.device)  # what its objective reads (SCAFFOLD), or None
    with base_deltas_applied(s.model, deltas):  # the start is already this client's own (client_start)
        budget = {client: int(config["local-steps"])} if "local-steps" in config else None  # system heterogeneity
        result = train_round_clients(s, method, local_settings(s), params, {client: params}, round_,
                                     method.requires, budgets=budget,
                                     inputs=None if inputs is None else {client: inputs})[client]
    content = encode_update(result.update, method.requires, loss=result.mean_loss, images=result.images)
    return Message(content, reply_to=msg)
