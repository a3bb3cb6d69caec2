"""Tensors, client updates and their signals as Flower records, with names a reader of the wire can follow.

A training instruction (server -> client) carries one ArrayRecord ``"global"``:

    params/blocks.0.attn.qkv.lora_A     the global trainable tensors (LoRA factors, head)
    params/head.weight
    base_delta/blocks.0.attn.qkv        dense corrections to frozen base weights (methods that keep them)
    input/blocks.0.attn.qkv.lora_A      tensors the client's objective reads (SCAFFOLD's c - c_i)

A reply (client -> server) carries one ArrayRecord ``"update"``, a ConfigRecord ``"meta"`` and a
MetricRecord ``"metrics"``:

    params/<key>                        the client's trained tensors
    meta/class_counts                   [C] int64 sample counts per class
    signal/class_stats/mean             one entry per tensor field of a signal payload (dataclass) ...
    signal/lora_signal/<factor key>     ... or per key of a dictionary payload
    meta:    client-id, num-samples     (integers), lora-scale (a client with its own LoRA rank)
    metrics: train-loss, images         (the client's mean loss and images seen; progress and cost rows),
             diag/<name>                (client counters for the tidy rows, e.g. nonfinite_signal_steps)

Only the signals the method requires are sent (``collectors.restrict_update``). Arrays keep their
dtype; decoding puts them on the server's device.

An extra client round (a stage's ``types.ExtraRound``, e.g. CCVR's ``features=global``) is an EVALUATE
message with the same ``"global"`` record (the request's params and base corrections) and a ConfigRecord
``"config"`` naming the signals to return (``signals``, comma-separated); the reply is one ArrayRecord
``"stats"`` with the ``signal/<name>/<field>`` entries (``encode_signals``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from torch import Tensor

from livar_bench.client.collectors import restrict_update
from livar_bench.types import ClassStats, ClientUpdate, Params, ServerState, Signal

PARAMS, BASE_DELTA, SIGNAL, META, DIAG, INPUT = "params/", "base_delta/", "signal/", "meta/", "diag/", "input/"
# Payload types of signals whose payload is a dataclass of tensors; any other payload is a {key: tensor} dict.
PAYLOAD_TYPES: dict[str, type] = {Signal.CLASS_STATS.value: ClassStats}
# Bounds of what serialisation adds to the counted tensor bytes (cost columns): per array entry (npy
# header, dtype and shape, the entry name, object ids of the array and its chunk) and per message
# (records, their ids and names, meta and config values including the run settings, message metadata).
ENTRY_OVERHEAD_BOUND = 768
RECORD_OVERHEAD_BOUND = 4096


def _array(t: Tensor) -> Array:
    return Array(t.detach().cpu().contiguous())


def _tensor(a: Array, device: torch.device | str) -> Tensor:
    return torch.from_numpy(a.numpy().copy()).to(device)


def encode_download(state: ServerState, inputs: Params | None = None) -> ArrayRecord:
    """What a client downloads: ``params/<key>``, ``base_delta/<module>`` and, for a method whose objective
    reads tensors from the server (``Method.client_inputs``), ``input/<key>``."""
    record = ArrayRecord()
    for key, t in state.params.items():
        record[PARAMS + key] = _array(t)
    for module, t in state.base_deltas.items():
        record[BASE_DELTA + module] = _array(t)
    for key, t in (inputs or {}).items():
        record[INPUT + key] = _array(t)
    return record


def decode_inputs(record: ArrayRecord, device: torch.device | str = "cpu") -> Params | None:
    """The ``input/<key>`` tensors of ``encode_download``'s record (None when it has none)."""
    inputs = {k[len(INPUT):]: _tensor(a, device) for k, a in record.items() if k.startswith(INPUT)}
    return inputs or None


def decode_download(record: ArrayRecord, device: torch.device | str = "cpu") -> tuple[Params, dict[str, Tensor]]:
    """(global params, base-weight corrections) from ``encode_download``'s record."""
    params = {k[len(PARAMS):]: _tensor(a, device) for k, a in record.items() if k.startswith(PARAMS)}
    deltas = {k[len(BASE_DELTA):]: _tensor(a, device) for k, a in record.items() if k.startswith(BASE_DELTA)}
    return params, deltas


def _payload_tensors(name: str, payload: Any) -> dict[str, Tensor]:
    if dataclasses.is_dataclass(payload):
        if PAYLOAD_TYPES.get(name) is not type(payload):
            raise ValueError(f"signal {name!r} sends a {type(payload).__name__}: add it to codec.PAYLOAD_TYPES "
                             f"so that the server can rebuild it")
        items = {f.name: getattr(payload, f.name) for f in dataclasses.fields(payload)}
    else:
        items = dict(payload)
    return {k: v for k, v in items.items() if v is not None}


def encode_update(update: ClientUpdate, requires: Collection[Signal], *, loss: float, images: int) -> RecordDict:
    """A client's reply: its tensors, counts and exactly the signals ``requires`` asks for."""
    update = restrict_update(update, requires)
    arrays = ArrayRecord()
    for key, t in update.params.items():
        arrays[PARAMS + key] = _array(t)
    arrays[META + "class_counts"] = _array(update.class_counts)
    for name, payload in update.signals.items():
        for field, t in _payload_tensors(name, payload).items():
            arrays[f"{SIGNAL}{name}/{field}"] = _array(t)
    meta = ConfigRecord({"client-id": int(update.client_id), "num-samples": int(update.num_samples)})
    if update.lora_scale is not None:  # heterogeneous ranks: the client's own alpha / r_k
        meta["lora-scale"] = float(update.lora_scale)
    if update.num_steps is not None:  # the local steps it actually took (FedNova, the tidy rows)
        meta["num-steps"] = int(update.num_steps)
    metrics = MetricRecord({"train-loss": float(loss), "images": int(images),
                            **{DIAG + k: float(v) for k, v in update.diagnostics.items()}})
    return RecordDict({"update": arrays, "meta": meta, "metrics": metrics})


def decode_update(content: RecordDict, device: torch.device | str = "cpu") -> tuple[ClientUpdate, float, int]:
    """(update, mean training loss, images seen) from ``encode_update``'s record dict."""
    arrays, meta, metrics = content["update"], content["meta"], content["metrics"]
    params: Params = {}
    class_counts = None
    for key, a in arrays.items():
        if key.startswith(PARAMS):
            params[key[len(PARAMS):]] = _tensor(a, device)
        elif key == META + "class_counts":
            class_counts = _tensor(a, device)
        elif not key.startswith(SIGNAL):
            raise ValueError(f"unknown entry {key!r} in a client update record")
    if class_counts is None:
        raise ValueError("client update record has no meta/class_counts")
    payloads = _payloads(arrays, device)
    update = ClientUpdate(client_id=int(meta["client-id"]), num_samples=int(meta["num-samples"]),
                          class_counts=class_counts, params=params, signals=payloads,
                          lora_scale=float(meta["lora-scale"]) if "lora-scale" in meta else None,
                          num_steps=int(meta["num-steps"]) if "num-steps" in meta else None,
                          diagnostics={k[len(DIAG):]: float(v) for k, v in metrics.items() if k.startswith(DIAG)})
    return update, float(metrics["train-loss"]), int(metrics["images"])


def encode_signals(signals: Mapping[str, Any]) -> RecordDict:
    """A client's reply to an extra client round (``types.ExtraRound``): only its signals, as
    ``signal/<name>/<field>`` entries of the ArrayRecord ``"stats"``."""
    arrays = ArrayRecord()
    for name, payload in signals.items():
        for field, t in _payload_tensors(name, payload).items():
            arrays[f"{SIGNAL}{name}/{field}"] = _array(t)
    return RecordDict({"stats": arrays})


def decode_signals(content: RecordDict, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The signals of ``encode_signals``' record dict (payload name -> payload)."""
    return _payloads(content["stats"], device)


def _payloads(arrays: ArrayRecord, device: torch.device | str) -> dict[str, Any]:
    """The ``signal/<name>/<field>`` entries of ``arrays`` as payloads (dataclasses where registered)."""
    signals: dict[str, dict[str, Tensor]] = {}
    for key, a in arrays.items():
        if key.startswith(SIGNAL):
            name, _, field = key[len(SIGNAL):].partition("/")
            signals.setdefault(name, {})[field] = _tensor(a, device)
    return {name: PAYLOAD_TYPES[name](**fields) if name in PAYLOAD_TYPES else fields
            for name, fields in signals.items()}


def wire_bytes(message: Message) -> int:
    """Serialised size of ``message``: the sum of its deflated objects (message, records, arrays, chunks).

    Every occurrence counts, as in a self-contained serialisation. Flower's object store may skip
    objects the receiver already holds (identical chunks, e.g. all-zero LoRA B factors), so a real
    transfer can be smaller, never larger, apart from transport framing.
    """
    return len(message.deflate()) + (record_bytes(message.content) if message.has_content() else 0)


def record_bytes(content: RecordDict) -> int:
    """Serialised size of a message's content (its records, arrays and array chunks)."""
    return _tree_bytes(content)


def _tree_bytes(obj: Any) -> int:
    # Flower's ``children`` are keyed by content hash (identical arrays or chunks appear once); walk the
    # entries themselves so that every occurrence counts.
    if isinstance(obj, Array):
        parts = [chunk for _, chunk in obj.slice_array()]
    elif isinstance(obj, Mapping):  # RecordDict, ArrayRecord (Config/MetricRecords hold no objects)
        parts = [v for v in obj.values() if hasattr(v, "deflate")]
    else:
        parts = []
    return len(obj.deflate()) + sum(_tree_bytes(p) for p in parts)
