"""Secure aggregation in the Flower engine: Flower's SecAgg+ protocol for the methods that need only a sum.

SecAgg+ (Bell et al. 2020; Flower's ``SecAggPlusWorkflow`` on the server, ``secaggplus_mod`` on the
clients) lets the server learn sum_k w_k x_k / sum_k w_k of the clients' vectors x_k and nothing else: each
client quantises w_k x_k (``clipping_range``, ``quantization_range``), masks it with pairwise and private
masks and the server removes the masks of the sum only. Here x_k is the client's update theta_k - theta
(every trainable tensor, in key order) and w_k the weight the method gives it (``Aggregator.secure_weight``).

A method can run this way when its server step needs only that weighted mean
(``secure_aggregation == "sum"``): the server then steps from one pseudo-client holding it,
``server_step(state, [theta + mean update])``, which for such a method is its server step on the
individual updates (the sum-only methods' contract, tests/flower/test_secure_aggregation.py). The result differs
from the plain aggregate by the quantisation only (at most 2 ``clipping_range`` / ``quantization_range`` per
entry and client, plus the weights' own quantisation), measured in the test.

The protocol runs on Flower's legacy strategy interface, so the round is driven through ``_Bridge``, a
legacy ``Strategy`` whose ``configure_fit`` says what each sampled client gets and whose
``aggregate_fit`` receives the unmasked mean.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import flwr.compat.common.recorddict_compat as compat
import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.server_config import ServerConfig
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from livar_bench.errors import BenchError
from livar_bench.types import ClientUpdate, Params, ServerState


@dataclass(frozen=True)
class SecAggSettings:
    """SecAgg+ parameters (Flower's names): shares per client key, the fraction needed to reconstruct one,
    the range updates are clipped to before quantisation and the number of quantisation levels."""

    num_shares: float = 1.0
    reconstruction_threshold: float = 0.75
    clipping_range: float = 1.0
    quantization_range: int = 2**22
    max_weight: float = 1e6


def encode_start(params: Params) -> tuple[list[str], Parameters]:
    keys = sorted(params)
    return keys, ndarrays_to_parameters([params[k].detach().cpu().float().numpy() for k in keys])


def decode_arrays(keys: list[str], parameters: Parameters, like: Params) -> Params:
    arrays = parameters_to_ndarrays(parameters)
    if len(arrays) != len(keys):
        raise BenchError(f"secure aggregation returned {len(arrays)} tensors for {len(keys)} keys")
    return {k: torch.from_numpy(np.asarray(a, dtype=np.float32).copy()).to(like[k].device, like[k].dtype)
            for k, a in zip(keys, arrays, strict=True)}


class _Bridge(LegacyStrategy):
    """The legacy strategy SecAgg+ drives: sampled clients and their instructions in, the unmasked mean out."""

    def __init__(self, nodes: dict[int, int], grid: Grid, params: Params, start: Parameters,
                 config: dict[str, Any]) -> None:
        self.nodes, self.grid, self.params, self.start, self.config = nodes, grid, params, start, config
        self.mean: Params | None = None
        self.replies: list[FitRes] = []

    def initialize_parameters(self, client_manager):  # noqa: D102  (the harness holds the state)
        return None

    def configure_fit(self, server_round, parameters, client_manager):  # noqa: D102
        run_id = self.grid.run.run_id
        return [(GridClientProxy(node, self.grid, run_id), FitIns(self.start, dict(self.config)))
                for _, node in sorted(self.nodes.items())]

    def aggregate_fit(self, server_round, results, failures):  # noqa: D102
        if failures or not results:
            raise BenchError(f"round {server_round}: secure aggregation lost {len(failures)} of "
                             f"{len(self.nodes)} clients; SecAgg+ here needs every sampled client")
        self.replies = [res for _, res in results]
        keys = json.loads(self.config["keys"])
        mean = decode_arrays(keys, results[0][1].parameters, self.params)  # every result holds the aggregate
        self.mean = {k: (self.params[k].double() + mean[k].double()).to(self.params[k].dtype) for k in keys}
        return results[0][1].parameters, {}

    def configure_evaluate(self, server_round, parameters, client_manager):  # noqa: D102
        return []

    def aggregate_evaluate(self, server_round, results, failures):  # noqa: D102
        return None, {}

    def evaluate(self, server_round, parameters):  # noqa: D102
        return None


def secure_mean(grid: Grid, nodes: dict[int, int], state: ServerState, server_round: int, run_spec: str,
                settings: SecAggSettings) -> tuple[Params, list[FitRes]]:
    """(theta + the clients' weighted mean update, the replies' metadata) through one SecAgg+ round.

    Args:
        nodes: client id -> node id of the round's sampled clients (at least two: SecAgg+ needs them).
        state: the server state the clients start from (sum-only methods keep no base corrections).
    """
    if len(nodes) < 2:
        raise BenchError("secure aggregation needs at least 2 clients per round (SecAgg+ masks pairwise)")
    if state.base_deltas:
        raise BenchError("secure aggregation cannot send corrections to the base weights")
    keys, parameters = encode_start(state.params)
    config = {"server-round": server_round, "run-spec": run_spec, "keys": json.dumps(keys), "sampled": len(nodes)}
    bridge = _Bridge(nodes, grid, dict(state.params), parameters, config)
    context = LegacyContext(Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(),
                                    run_config={}), config=ServerConfig(num_rounds=server_round), strategy=bridge)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: server_round})
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(parameters, keep_input=True)
    workflow = SecAggPlusWorkflow(settings.num_shares, settings.reconstruction_threshold,
                                  max_weight=settings.max_weight, clipping_range=settings.clipping_range,
                                  quantization_range=settings.quantization_range)
    workflow(grid, context)
    if bridge.mean is None:
        raise BenchError(f"round {server_round}: secure aggregation halted (too few clients answered a stage; "
                         "see Flower's log)")
    return bridge.mean, bridge.replies


def pseudo_update(mean: Params, num_classes: int) -> ClientUpdate:
    """The one client a sum-only method's server step sees under secure aggregation: the mean itself."""
    device = next(iter(mean.values())).device
    return ClientUpdate(client_id=0, num_samples=1, class_counts=torch.zeros(num_classes, dtype=torch.long,
                                                                             device=device), params=mean)


# --- the client side: the harness's ClientApp with Flower's SecAgg+ mod in front of its training ---------

secure_app = ClientApp(mods=[secaggplus_mod])


@secure_app.query()
def _query(msg: Message, context: Context) -> Message:
    from livar_bench.flower.clientapp import query

    return query(msg, context)


@secure_app.train()
def train_secure(msg: Message, context: Context) -> Message:
    """Train this client from the instruction's tensors and reply with its weighted update for masking."""
    from livar_bench.federation.kernel import local_settings, train_round_clients
    from livar_bench.flower.clientapp import _setup, node_spec, partition_id

    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    config = fitins.config
    client, round_ = partition_id(context), int(config["server-round"])
    spec = node_spec(str(config["run-spec"]), dict(context.node_config))
    s = _setup(spec)
    method = spec.method_spec.build()
    keys = json.loads(str(config["keys"]))
    like = {k: torch.zeros(0, device=s.device) for k in keys}
    start = decode_arrays(keys, fitins.parameters, like)
    result = train_round_clients(s, method, local_settings(s), start, {client: start}, round_, method.requires)[client]
    update = private_update(spec, method, start, result.update, round_, int(config["sampled"]))
    delta = [(update.params[k].float() - start[k].float()).cpu().numpy() for k in keys]
    weight = int(method.aggregator.secure_weight(update))
    reply = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(delta), weight,
                   {"train-loss": float(result.mean_loss), "images": int(result.images), "client-id": client})
    return Message(compat.fitres_to_recorddict(reply, keep_input=False), reply_to=msg)


def private_update(spec: Any, method: Any, start: Params, update: ClientUpdate, round_: int,
                   sampled: int) -> ClientUpdate:
    """The client's update as a ``dp`` stage releases it under secure aggregation: clipped and noised by the
    client itself (central noise is drawn as the clients' shares, the same distribution), from the stream
    the server's ``dp`` would have used for this client (so both engines draw the same noise)."""
    from livar_bench.methods.dp import DP, privacy_model_for
    from livar_bench.privacy.rounds import RoundPrivacy, privatise
    from livar_bench.seeding import STREAM_SERVER, generator

    dp = next((stage for stage in method.stages if isinstance(stage, DP) and not stage.passthrough), None)
    if dp is None:
        return update
    placement = dp.noise_placement(method)
    model = privacy_model_for(spec, placement == "local")
    frozen = method.frozen_keys(list(start), round_)
    setting = RoundPrivacy(sigma=dp.resolved_sigma(model, spec.rounds, method.requires), bound=float(dp.clip),
                           placement="local" if placement == "local" else "distributed",
                           keys=tuple(sorted(k for k in start if k not in frozen)))
    server = generator(spec.seed, STREAM_SERVER, round_, device=next(iter(start.values())).device)
    return privatise(start, [update], setting, server, contributions=sampled)[0][0]
