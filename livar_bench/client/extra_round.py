"""One extra client round on a stage's request (``types.ExtraRound``), and what it costs.

The CCVR paper computes the feature statistics it calibrates on with the final global model's feature
extractor, not with each client's local model: the server broadcasts that model once more and every
client runs its training data through it. A stage asks for such a round through
``RoundContext.extra_round(ExtraRound(params, signals, base_deltas))``; ``ExtraRoundPass`` runs it in
process (the local engine; the Flower ClientApp for its own client), ``flower.strategy.FlowerExtraRound``
over Flower messages. Both count the same costs, added to the round's cost columns by ``add_costs``: the
upload of the signals, the extra download of the model's trainable tensors and of the request's base
corrections (the round's new ones, which clients do not hold yet; none for most methods) and the time, ``global_stats_s`` (taken out of ``aggregate_s``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch

from livar_bench.client.collectors import collectors_for, signal_bytes
from livar_bench.client.costs import params_bytes
from livar_bench.client.phase import base_deltas_applied
from livar_bench.client.train import EndOfClient, LocalSettings
from livar_bench.data.base import ImageSplit
from livar_bench.data.transforms import DeviceTransform
from livar_bench.device import synchronize
from livar_bench.models import LoraViT
from livar_bench.seeding import client_generator
from livar_bench.types import ClientUpdate, ExtraRound, Params


def check_request(request: ExtraRound) -> None:
    """Refuse a request for signals that only training produces (e.g. LIVAR's path integrals)."""
    trained = sorted(c.name for c in collectors_for(request.signals) if c.needs_training)
    if trained:
        raise ValueError(f"an extra client round computes no training signals ({', '.join(trained)}); ask for "
                         "signals of a finished model, e.g. class_stats")


def client_signals(model: LoraViT, params: Params, client_id: int, data: ImageSplit, transform: DeviceTransform,
                   settings: LocalSettings, num_classes: int, request: ExtraRound,
                   generator: torch.Generator) -> ClientUpdate:
    """One client's reply: the signals of ``request`` on its training data under ``params`` (loaded into
    ``model``, whose base weights already carry the request's corrections); no tensors of its own.
    ``generator`` is the stream of collectors that sample (Fisher's labels)."""
    end = EndOfClient(model, params, data, transform, settings, num_classes, generator)
    signals = {c.name: c.payload(None, 0, end, request.signals) for c in collectors_for(request.signals)}
    return ClientUpdate(client_id=client_id, num_samples=len(data),
                        class_counts=torch.bincount(data.labels, minlength=num_classes).cpu(), params={},
                        signals=signals)


class ExtraRoundPass:
    """Callable ``(ExtraRound) -> [ClientUpdate per client, in client-id order]``, counting its cost.

    ``seed`` and ``round_`` select each client's random stream for collectors that sample (the client's
    own stream of the round, ``seeding.client_generator``, drawn afresh), so a resumed round draws the same.
    """

    def __init__(self, model: LoraViT, clients: Mapping[int, ImageSplit], transform: DeviceTransform,
                 num_classes: int, settings: LocalSettings, *, seed: int, round_: int) -> None:
        self.model, self.transform, self.num_classes, self.settings = model, transform, num_classes, settings
        self.seed, self.round = seed, round_
        self.clients = dict(sorted(clients.items()))
        self.seconds = 0.0
        self.upload_bytes = 0
        self.download_bytes = 0
        self.calls = 0

    def __call__(self, request: ExtraRound) -> list[ClientUpdate]:
        check_request(request)
        start = time.perf_counter()
        device = next(iter(request.params.values())).device
        with base_deltas_applied(self.model, request.base_deltas):
            replies = [client_signals(self.model, request.params, k, data, self.transform, self.settings,
                                      self.num_classes, request, client_generator(self.seed, self.round, k, device))
                       for k, data in self.clients.items()]
        synchronize(device)
        self.seconds += time.perf_counter() - start
        self.record(request, replies, len(self.clients))
        return replies

    def record(self, request: ExtraRound, replies: list[ClientUpdate], messages: int) -> None:
        """Count one call: the signals uploaded, and the trainable tensors and base corrections sent to
        ``messages`` clients (corrections only methods that change them every round have: a client does not
        hold the round's new ones yet)."""
        self.upload_bytes += sum(sum(signal_bytes(u, request.signals).values()) for u in replies)
        self.download_bytes += (params_bytes(request.params) + params_bytes(request.base_deltas)) * messages
        self.calls += 1

    def add_costs(self, costs: dict[str, float], num_clients: int) -> dict[str, float]:
        """The round's cost columns with this pass added (unchanged when no stage asked for it).

        Per-client byte columns grow by this pass's bytes divided by ``num_clients``; its time is
        reported as ``global_stats_s`` (and taken out of ``aggregate_s`` by the caller).
        """
        if not self.calls:
            return costs
        n = max(num_clients, 1)
        out = dict(costs)
        out["upload_bytes_per_client"] = out.get("upload_bytes_per_client", 0.0) + self.upload_bytes / n
        out["upload_signal_bytes_per_client"] = out.get("upload_signal_bytes_per_client", 0.0) + self.upload_bytes / n
        out["download_bytes_per_client"] = out.get("download_bytes_per_client", 0.0) + self.download_bytes / n
        out["global_stats_s"] = self.seconds
        return out
