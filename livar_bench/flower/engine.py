"""``--engine flower``: the harness's round loop with every round run through Flower.

The round loop (``federation._run_locked``: resume, evaluation, tidy rows, checkpoints) is the same for
both engines; this module supplies its per-round step: ``MethodStrategy.configure_train`` ->
``grid.send_and_receive`` (the ClientApps train) -> ``MethodStrategy.aggregate_train`` (the method's
``server_step``). ``run_simulated`` runs it all inside Flower's simulation engine
(``flwr.simulation.run_simulation``, one virtual SuperNode per client); ``serverapp.py`` runs it on a
real SuperLink.

Extra cost rows of a Flower round: ``clients_replied`` (also written by the local engine),
``clients_failed``, ``wire_upload_bytes_per_client`` and ``wire_download_bytes_per_client`` (serialised
sizes of the replies and instructions, ``codec.wire_bytes``, means over the round's messages).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from livar_bench.federation import Event, RunOutcome, Setup, TrainedRound, sample_clients
from livar_bench.federation.kernel import RoundFn, method_costs, round_context, round_plan
from livar_bench.flower.strategy import NODE_WAIT_S, MethodStrategy
from livar_bench.methods.base import Method
from livar_bench.types import ServerData, ServerState


class FlowerEngine:
    """A ``federation.Engine`` that runs each round through a Flower ``Grid``."""

    name = "flower"

    def __init__(self, grid: Grid, timeout: float = 3600.0, node_wait_s: float = NODE_WAIT_S,
                 nodes: dict[int, int] | None = None) -> None:
        self.grid = grid
        self.timeout = timeout
        self.node_wait_s = node_wait_s
        self.nodes = dict(nodes or {})  # client id -> node id, when the caller has already connected them
        self.strategy: MethodStrategy | None = None

    def __call__(self, s: Setup, method: Method, settings: Any, emit: Event,
                 server_data: ServerData | None) -> RoundFn:
        spec = s.spec
        strategy = MethodStrategy(method, run_spec=spec.model_dump_json(), num_clients=spec.num_clients,
                                  sample=lambda r: sample_clients(spec, r),
                                  context=lambda r, extra: round_context(s, r, server_data, extra), device=s.device,
                                  plan=lambda r, clients: round_plan(s, r, clients), node_wait_s=self.node_wait_s)
        strategy.timeout = self.timeout
        strategy.nodes = dict(self.nodes)
        self.strategy = strategy

        def train_round(state: ServerState, round_: int) -> TrainedRound:
            if spec.secure_aggregation:
                return self._secure_round(s, method, strategy, state, round_, server_data, emit)
            strategy.state = state
            t0 = time.perf_counter()
            messages = list(strategy.configure_train(round_, ArrayRecord(), ConfigRecord(), self.grid))
            replies = list(self.grid.send_and_receive(messages, timeout=self.timeout))
            strategy.aggregate_train(round_, replies)
            report = strategy.last
            assert report is not None and strategy.state is not None
            for update, loss in zip(report.updates, report.losses, strict=True):
                emit("client", round=round_, client=update.client_id, loss=loss)
            n = max(len(report.updates), 1)  # per-client means; a round without replies costs nothing
            extra = report.extra_round
            comm = method_costs(method, state, report.updates, round_)
            costs = {
                **(extra.add_costs(comm, n) if extra is not None else comm),
                "clients_replied": float(len(report.updates)),
                "clients_failed": float(len(report.failed)),
                # the extra client round's messages count per client of the round, as its bytes do
                "wire_upload_bytes_per_client": (sum(report.upload_wire) + (extra.wire_upload if extra else 0)) / n,
                "wire_download_bytes_per_client": (sum(report.download_wire) + (extra.wire_download if extra else 0))
                / max(len(report.download_wire), 1),
            }
            train_s = time.perf_counter() - t0 - report.aggregate_s - (extra.seconds if extra else 0.0)
            return TrainedRound(strategy.state, report.updates, report.ctx, report.losses, report.images,
                                train_s, report.aggregate_s, costs, plan=strategy.last_plan)

        return train_round


    def _secure_round(self, s: Setup, method: Method, strategy: MethodStrategy, state: ServerState, round_: int,
                      server_data: ServerData | None, emit: Event) -> TrainedRound:
        """One round through SecAgg+ (``secagg.py``): the server steps from the clients' unmasked mean.

        Stages run after the aggregator as usual; their ``before`` (dp's clipping and noise) ran on each
        client, which the server cannot do without seeing the updates.
        """
        from livar_bench.flower.secagg import SecAggSettings, pseudo_update, secure_mean

        t0 = time.perf_counter()
        nodes = strategy.client_nodes(self.grid)
        sampled = {k: nodes[k] for k in sample_clients(s.spec, round_) if k in nodes}
        mean, replies = secure_mean(self.grid, sampled, state, round_, s.spec.model_dump_json(), SecAggSettings(
            max_weight=float(s.clients.max_size())))
        ctx = round_context(s, round_, server_data, None)
        t1 = time.perf_counter()
        pseudo = pseudo_update(mean, s.bundle.num_classes)
        new = method.aggregator.server_step(state, [pseudo], ctx)
        for stage in method.stages:
            new = stage.apply(state, new, [pseudo], ctx)
        losses = [float(r.metrics["train-loss"]) for r in replies]
        for r in replies:
            emit("client", round=round_, client=int(r.metrics["client-id"]), loss=float(r.metrics["train-loss"]))
        return TrainedRound(new, [pseudo], ctx, losses, sum(int(r.metrics["images"]) for r in replies), t1 - t0,
                            time.perf_counter() - t1, {"clients_replied": float(len(replies))})


class InGrid:
    """A ``federation.Launcher`` for a round loop that already runs inside a ServerApp (``serverapp.py``).

    ``nodes``: client id -> node id of SuperNodes already connected (``strategy.connect_clients``);
    ``node_wait_s``: how long a round waits for a missing client's SuperNode.
    """

    def __init__(self, grid: Grid, nodes: dict[int, int] | None = None, node_wait_s: float = NODE_WAIT_S) -> None:
        self.grid = grid
        self.nodes = nodes
        self.node_wait_s = node_wait_s

    def launch(self, spec: Any, body: Callable[..., RunOutcome]) -> RunOutcome:
        return body(engine=FlowerEngine(self.grid, node_wait_s=self.node_wait_s, nodes=self.nodes))


class Simulation:
    """A ``federation.Launcher``: the round loop as the ServerApp of a Flower simulation (``--engine flower``)."""

    def launch(self, spec: Any, body: Callable[..., RunOutcome]) -> RunOutcome:
        return run_simulated(spec, body)


def run_simulated(spec: Any, body: Callable[..., RunOutcome]) -> RunOutcome:
    """Run ``body(engine=...)`` (the round loop) as the ServerApp of a Flower simulation of the run's clients.

    One virtual SuperNode per client (``partition-id`` = client id), one CPU each; the ServerApp's
    exceptions (a round without replies, a bad setting) are re-raised here.
    """
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from livar_bench.flower.clientapp import app as client_app
    from livar_bench.flower.secagg import secure_app

    if spec.secure_aggregation:
        client_app = secure_app

    outcome: list[RunOutcome] = []
    errors: list[BaseException] = []
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Any) -> None:
        try:
            outcome.append(body(engine=FlowerEngine(grid)))
        except BaseException as err:  # re-raised in the caller's thread below
            errors.append(err)

    from livar_bench.device import resolve_device
    from livar_bench.errors import BenchError

    # Clients share the GPU (up to 4 per GPU) when the run trains on CUDA; on CPU Ray must be asked for none.
    gpus = 1.0 / max(1, min(spec.num_clients, 4)) if resolve_device(spec.device).type == "cuda" else 0.0
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": gpus},
               "init_args": {"log_to_driver": False, "logging_level": logging.ERROR}}
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.WARNING)
    try:
        run_simulation(server_app, client_app, num_supernodes=spec.num_clients, backend_config=backend)
    except RuntimeError as err:  # the simulation runtime itself failed (it logs the details)
        if errors:
            raise errors[0] from None
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise BenchError(f"Flower's simulation engine stopped: {str(cause).splitlines()[0] if str(cause) else cause!r}"
                         f" (its log above has the details)") from None
    finally:
        flwr_logger.setLevel(level)
    if errors:
        raise errors[0]
    if not outcome:
        raise BenchError("the Flower simulation ended without finishing the run (see Flower's log above)")
    return outcome[0]
