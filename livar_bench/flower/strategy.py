"""Any registered method spec as a Flower strategy (the Message API: configure/aggregate train/evaluate).

The strategy owns the method's ``ServerState`` (params, buffers, base-weight corrections) and calls the
same ``Method.server_step`` as the in-process round loop; nothing about a method is re-implemented.

A round: ``configure_train`` sends each sampled client (``sample(round)``; client id = the node's
``partition-id``) the global tensors and the run's settings; ``aggregate_train`` decodes the replies,
drops the ones that failed (the method sees only the replies it got), checks the method's
``min_replies`` and runs ``server_step``. A round with no reply raises ``BenchError``. Evaluation is
centralised (the server holds the test split), so ``configure_evaluate`` sends nothing.

Use it like any Flower strategy (``strategy.start(grid, initial_arrays, num_rounds)``) or, as the
harness does, round by round with its own evaluation, checkpoints and cost rows (``engine.py``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from livar_bench.client.collectors.lora_signal import drop_nonfinite_received
from livar_bench.client.extra_round import ExtraRoundPass, check_request
from livar_bench.client.system import replying
from livar_bench.errors import BenchError
from livar_bench.flower.codec import (
    decode_download,
    decode_signals,
    decode_update,
    encode_download,
    wire_bytes,
)
from livar_bench.methods.base import Method
from livar_bench.types import ClientUpdate, ExtraRound, RoundContext, ServerState

QUERY_PARTITION = "partition"  # name of the ConfigRecord a client answers the partition query with
NODE_WAIT_S = 300.0  # default wait for the run's SuperNodes to connect (the App's run setting node-wait-s)


def short_reason(reason: str, limit: int = 160) -> str:
    """One line of a failed reply's reason (Flower passes on the client's whole remote traceback)."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", reason).splitlines() if line.strip()]
    said = [line.partition("Message:")[2].strip() for line in lines if "Message:" in line]
    text = (said or lines or ["unknown error"])[-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(map(str, sorted(ids))) or "none"


def connect_clients(grid: Grid, num_clients: int, wait_s: float, nodes: dict[int, int] | None = None,
                    say: Callable[[str], None] | None = None, every_s: float = 10.0,
                    query_s: float = 60.0) -> dict[int, int]:
    """Client id -> node id, once a connected node reports each partition id 0 .. num_clients - 1.

    Waits up to ``wait_s`` seconds until ``num_clients`` SuperNodes are connected, then asks each node
    once for its ``partition-id`` (a QUERY message its ClientApp answers, within at least ``query_s``
    seconds). While it waits, ``say`` (default: Flower's log) reports how many SuperNodes the run needs
    and how many are connected, when that changes and every ``every_s`` seconds. Without them all in
    time it raises one ``BenchError`` line saying what to start; no message was sent to a node then.
    """
    say = say or (lambda text: log(20, "%s", text))
    nodes = dict(nodes or {})
    asked = set(nodes.values())
    deadline = time.monotonic() + wait_s
    last: tuple[int, ...] | None = None
    next_report = 0.0
    while True:
        connected = list(grid.get_node_ids())
        new = [n for n in connected if n not in asked]
        if new and len(connected) >= num_clients:
            asked.update(new)
            _ask_partition_ids(grid, new, nodes, num_clients, max(query_s, deadline - time.monotonic()))
        missing = [k for k in range(num_clients) if k not in nodes]
        if not missing:
            return nodes
        present = sorted(k for k in nodes if 0 <= k < num_clients)
        now = time.monotonic()
        if now >= deadline:
            if len(connected) < num_clients:
                raise BenchError(f"only {len(connected)} of the {num_clients} SuperNodes this run needs connected "
                                 f"within {wait_s:g} s: start one SuperNode per partition id 0 .. {num_clients - 1} "
                                 f"(num-clients must equal the number of SuperNodes), or allow them longer with "
                                 f"node-wait-s")
            raise BenchError(f"{len(connected)} SuperNodes are connected but no node reported partition id(s) "
                             f"{_ids(missing)} within {wait_s:g} s: give each SuperNode its own partition id 0 .. "
                             f"{num_clients - 1} (--node-config 'partition-id=N')")
        if (len(connected), *present) != last or now >= next_report:
            ids = f", partition ids reported: {_ids(present)}" if asked else ""
            say(f"waiting for {num_clients} SuperNodes (partition ids 0 .. {num_clients - 1}): {len(connected)} "
                f"connected{ids}; giving up in {deadline - now:.0f} s (node-wait-s)")
            last, next_report = (len(connected), *present), now + every_s
        time.sleep(min(0.5, max(0.0, deadline - now)))


def _ask_partition_ids(grid: Grid, node_ids: list[int], nodes: dict[int, int], num_clients: int,
                       timeout: float) -> None:
    """Ask ``node_ids`` for their partition ids, adding them to ``nodes`` (client id -> node id)."""
    asks = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in node_ids]
    for reply in grid.send_and_receive(asks, timeout=timeout):
        if reply.has_error():
            log(30, "node %s did not report its partition id: %s", reply.metadata.src_node_id,
                short_reason(reply.error.reason))
            continue
        cid = int(reply.content[QUERY_PARTITION]["partition-id"])
        if cid in nodes and nodes[cid] != reply.metadata.src_node_id:
            raise BenchError(f"two SuperNodes report partition id {cid}; give each SuperNode its own "
                             f"(--node-config 'partition-id=N', N = 0 .. {num_clients - 1})")
        if not 0 <= cid < num_clients:
            log(30, "a SuperNode reports partition id %d, outside this run's 0 .. %d: it stays idle "
                "(num-clients must equal the number of SuperNodes)", cid, num_clients - 1)
        nodes[cid] = reply.metadata.src_node_id


@dataclass
class RoundReport:
    """What the last ``aggregate_train`` saw and did (read by the harness for its rows)."""

    round: int
    updates: list[ClientUpdate]
    losses: list[float]
    images: int
    ctx: RoundContext
    asked: int
    failed: dict[int, str]  # node id -> reason
    upload_wire: list[int]  # serialised bytes of each reply
    download_wire: list[int]  # serialised bytes of each instruction sent
    aggregate_s: float  # the server step without the extra client round
    extra_round: FlowerExtraRound | None = None


class MethodStrategy(Strategy):
    """A livar-bench method (any spec: aggregator, stages, server state) as a Flower ``Strategy``.

    Args:
        method: the built method (``MethodSpec.parse(text).build()``).
        run_spec: the run's settings as JSON (``RunSpec.model_dump_json()``); clients rebuild the run from it.
        num_clients: clients of the federation (nodes must report partition ids 0 .. num_clients - 1).
        sample: round -> client ids asked to train (the harness's ``sample_clients``).
        context: (round, extra client round) -> the server's ``RoundContext`` (the extra round goes to
            ``RoundContext.extra_round``).
        device: where the server keeps its state.
        node_wait_s: how long to wait for every client's SuperNode to connect before giving up
            (``connect_clients``).
        plan: (round, sampled clients) -> the round's system-heterogeneity plan (``federation.kernel.round_plan``)
            or None: only the clients that will reply are asked, each with its number of local steps.
    """

    def __init__(self, method: Method, *, run_spec: str, num_clients: int, sample: Callable[[int], list[int]],
                 context: Callable[[int, Any], RoundContext], device: torch.device | str = "cpu",
                 node_wait_s: float = NODE_WAIT_S, plan: Callable[[int, list[int]], Any] | None = None) -> None:
        self.method = method
        self.run_spec = run_spec
        self.num_clients = num_clients
        self.sample = sample
        self.context = context
        self.device = torch.device(device)
        self.node_wait_s = node_wait_s
        self.state: ServerState | None = None
        self.nodes: dict[int, int] = {}  # client id -> node id
        self.last: RoundReport | None = None
        self._sent: list[int] = []
        self.grid: Grid | None = None
        self.timeout = 3600.0
        self.plan = plan
        self.last_plan: Any = None  # the plan of the round last configured

    # --- nodes ---------------------------------------------------------------------------------

    def client_nodes(self, grid: Grid) -> dict[int, int]:
        """Client id -> node id: waits (``node_wait_s``) until a node reports each partition id of the run."""
        if any(k not in self.nodes for k in range(self.num_clients)):
            self.nodes = connect_clients(grid, self.num_clients, self.node_wait_s, self.nodes)
        return self.nodes

    # --- training --------------------------------------------------------------------------------

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        if self.state is None:  # started as a plain Flower strategy: the initial arrays are the global params
            params, deltas = decode_download(arrays, self.device)
            self.state = self.method.init_state(params).evolve(base_deltas=deltas)
        nodes = self.client_nodes(grid)
        self.grid = grid
        state = self.state
        shared = encode_download(state)
        settings = ConfigRecord({**dict(config), "server-round": server_round, "run-spec": self.run_spec})
        sampled = self.sample(server_round)
        self.last_plan = self.plan(server_round, sampled) if self.plan is not None else None
        todo, budgets = replying(sampled, self.last_plan)  # a client that will not reply is not asked
        messages = []
        for k in todo:
            if k not in nodes:
                continue
            start = self.method.client_start(state, k)  # personalised methods send each client its own start
            inputs = self.method.client_inputs(state, k)  # and SCAFFOLD each client its correction
            download = shared if start is state.params and inputs is None else \
                encode_download(state.evolve(params=start), inputs)
            own = settings if budgets is None else ConfigRecord({**dict(settings), "local-steps": budgets[k]})
            messages.append(Message(RecordDict({"global": download, "config": own}), dst_node_id=nodes[k],
                                    message_type=MessageType.TRAIN))
        self._sent = [wire_bytes(m) for m in messages]
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self.state is None:
            raise RuntimeError("aggregate_train before configure_train")
        updates, losses, images, failed, wire = [], [], 0, {}, []
        for reply in replies:
            if reply.has_error():
                failed[reply.metadata.src_node_id] = reply.error.reason
                continue
            update, loss, seen = decode_update(reply.content, self.device)
            update = drop_nonfinite_received(update)  # a NaN from outside would make LIVAR's weights uniform
            updates.append(update)
            losses.append(loss)
            images += seen
            wire.append(wire_bytes(reply))
        asked = len(self._sent)
        if not updates and asked == 0:  # every sampled client dropped out (system heterogeneity): nothing to do
            ctx = self.context(server_round, None)
            self.last = RoundReport(server_round, [], [], 0, ctx, 0, {}, [], [], 0.0, None)
            return encode_download(self.state), MetricRecord({"clients-replied": 0, "clients-failed": 0})
        if not updates:
            reasons = "; ".join(sorted({short_reason(r) for r in failed.values()})) or "no reply before the timeout"
            raise BenchError(f"round {server_round}: none of the {asked} clients asked replied ({reasons}); "
                             f"the run stops, keeping the checkpoint of round {server_round - 1}: rerun the "
                             f"same command to resume")
        if len(updates) < self.method.min_replies:
            raise BenchError(f"round {server_round}: {self.method.spec} needs at least {self.method.min_replies} "
                             f"client replies per round, got {len(updates)} of {asked}")
        extra = FlowerExtraRound(self, server_round, updates)
        ctx = self.context(server_round, extra)
        t0 = time.perf_counter()
        self.state = self.method.server_step(self.state, updates, ctx)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.last = RoundReport(server_round, updates, losses, images, ctx, asked, failed, wire, self._sent,
                                time.perf_counter() - t0 - extra.seconds, extra)
        metrics = MetricRecord({"clients-replied": len(updates), "clients-failed": len(failed),
                                "train-loss": float(sum(losses) / len(losses))})
        return encode_download(self.state), metrics

    # --- evaluation: centralised on the server (it holds the test split) -------------------------------

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None

    def summary(self) -> None:
        log(20, "\t├── livar-bench method: %s (signals: %s; min replies: %d)", self.method.spec,
            ",".join(sorted(s.value for s in self.method.requires)) or "none", self.method.min_replies)


class FlowerExtraRound(ExtraRoundPass):
    """``RoundContext.extra_round`` over Flower: the round's replying clients answer a stage's
    ``ExtraRound`` (an EVALUATE message to each; ``clientapp.extra_round``).

    Counts what it costs as the local engine's ``ExtraRoundPass`` does (``add_costs``), plus the
    serialised sizes of its messages (``wire_upload`` / ``wire_download``). Clients that fail in this round
    are left out of its replies; none replying is an error.
    """

    def __init__(self, strategy: MethodStrategy, server_round: int, updates: list[ClientUpdate]) -> None:
        self.strategy, self.round = strategy, server_round
        self.updates = {u.client_id: u for u in updates}  # the round's replies: who is asked, their counts
        self.seconds, self.upload_bytes, self.download_bytes, self.calls = 0.0, 0, 0, 0
        self.wire_upload, self.wire_download = 0, 0

    def __call__(self, request: ExtraRound) -> list[ClientUpdate]:
        check_request(request)
        start = time.perf_counter()
        st = self.strategy
        if st.grid is None:
            raise RuntimeError("an extra client round runs only inside a round (after configure_train)")
        nodes = {k: st.nodes[k] for k in self.updates}
        clients = {node: k for k, node in nodes.items()}
        record = encode_download(ServerState(params=dict(request.params), base_deltas=dict(request.base_deltas)))
        config = ConfigRecord({"server-round": self.round, "run-spec": st.run_spec,
                               "signals": ",".join(sorted(s.value for s in request.signals))})
        messages = [Message(RecordDict({"global": record, "config": config}), dst_node_id=node,
                            message_type=MessageType.EVALUATE) for node in nodes.values()]
        self.wire_download += sum(wire_bytes(m) for m in messages)
        replies: dict[int, ClientUpdate] = {}
        failed = []
        for reply in st.grid.send_and_receive(messages, timeout=st.timeout):
            if reply.has_error():
                failed.append(short_reason(reply.error.reason))
                continue
            k = clients[reply.metadata.src_node_id]
            own = self.updates[k]
            replies[k] = ClientUpdate(k, own.num_samples, own.class_counts, {},
                                      signals=decode_signals(reply.content, st.device))
            self.wire_upload += wire_bytes(reply)
        if not replies:
            raise BenchError(f"round {self.round}: no client answered the extra client round "
                             f"({'; '.join(sorted(set(failed))) or 'no reply before the timeout'})")
        ordered = [replies[k] for k in sorted(replies)]
        self.record(request, ordered, len(messages))
        self.seconds += time.perf_counter() - start
        return ordered
