"""The client phase of a round, used by the round loop, ``bench``, ``explain`` and the Flower client.

Given the round's global tensors and the clients' data, train every client (one after another on the
shared model, or ``pack`` at a time, ``client/packed.py``) with the one seeding scheme
(``seeding.client_generator``) and return each client's result. Dense base-weight corrections of the
server state are applied to the frozen backbone for the duration (``base_deltas_applied``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor

from livar_bench.client.objectives import LocalObjective
from livar_bench.client.packed import resolve_pack, train_in_packs
from livar_bench.client.train import ClientResult, LocalSettings, local_train
from livar_bench.data.base import ImageSplit
from livar_bench.data.transforms import DeviceTransform
from livar_bench.models import LoraViT
from livar_bench.seeding import client_generator
from livar_bench.types import Params, Signal


def train_clients(
    model: LoraViT,
    start: Params,
    clients: Mapping[int, ImageSplit],
    transform: DeviceTransform,
    objective: LocalObjective,
    settings: LocalSettings,
    *,
    seed: int,
    round_: int,
    num_classes: int,
    requires: frozenset[Signal] | set[Signal] = frozenset(),
    pack: int | None = None,
    on_client: Callable[[int, ClientResult], None] | None = None,
    starts: Mapping[int, Params] | None = None,
    frozen: frozenset[str] = frozenset(),
    budgets: Mapping[int, int] | None = None,
    objectives: Mapping[int, LocalObjective] | None = None,
) -> dict[int, ClientResult]:
    """Client id -> result for every client in ``clients`` (trained in id order).

    Args:
        start: the round's global trainable tensors.
        starts: per-client starting tensors, where a method personalises them (``Method.client_start``);
            overrides ``start``.
        frozen: trainable keys clients leave unchanged (``Method.frozen_keys``, from the aggregator's
            ``client_side()``).
        seed, round_: select each client's random stream (``seeding.client_generator``).
        pack: clients per batched step (None = auto: off on CPU, up to 10 on CUDA).
        on_client: called after each client, e.g. for progress.
        budgets: client id -> its local steps this round (``client/system.py``); absent = full epochs.
        objectives: client id -> its own objective (one that reads tensors the server sent it,
            ``Method.objective_for``); overrides ``objective``.
    """
    device = next(iter(model.trainable.values())).device
    ids = sorted(clients)
    gens = {k: client_generator(seed, round_, k, device=device) for k in ids}
    per_pack = resolve_pack(pack, device, len(ids))
    own = {k: objective if objectives is None else objectives[k] for k in ids}
    packed = {} if per_pack <= 1 else train_in_packs(
        model, starts if starts is not None else start, {k: clients[k] for k in ids}, transform,
        objective if objectives is None else own, settings, gens, num_classes, requires, per_pack, frozen=frozen,
        per_client=starts is not None, budgets=budgets)
    out: dict[int, ClientResult] = {}
    for k in ids:
        out[k] = packed[k] if k in packed else local_train(
            model, starts[k] if starts is not None else start, clients[k], transform, own[k], settings, gens[k],
            num_classes, requires, client_id=k, frozen=frozen, max_steps=(budgets or {}).get(k))
        if on_client is not None:
            on_client(k, out[k])
    return out


@contextmanager
def base_deltas_applied(model: LoraViT, deltas: Mapping[str, Tensor] | None) -> Iterator[None]:
    """Add dense corrections {LoRA module path: [out, in]} to the frozen base weights, then restore them.

    The original weights are copied back afterwards, bit for bit, so a correction never leaks into
    another client, round or method.
    """
    if not deltas:
        yield
        return
    saved = []
    with torch.no_grad():
        for module, delta in deltas.items():
            weight = model.net.get_submodule(module).base_layer.weight
            saved.append((weight, weight.detach().clone()))
            weight.add_(delta.to(device=weight.device, dtype=weight.dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            for weight, original in saved:
                weight.copy_(original)


def add_deltas(*groups: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    """The sum of several {module: delta} dictionaries (missing modules count as zero)."""
    out: dict[str, Tensor] = {}
    for group in groups:
        for module, delta in (group or {}).items():
            out[module] = out[module] + delta if module in out else delta
    return out
