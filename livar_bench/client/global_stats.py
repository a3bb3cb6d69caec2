"""One extra client pass: class statistics of the clients' data under the *global* model.

The CCVR paper computes the feature statistics it calibrates on with the final global model's feature
extractor, not with each client's local model: the server broadcasts the global model once more and
every client runs its training data through it. ``GlobalStatsPass`` is that pass for the federation
loop. A server stage calls it through ``RoundContext.global_class_stats``; the loop adds what it cost
(time, the extra download of the global model, the upload of the statistics) to the round's cost
columns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch

from livar_bench.client.collectors.class_stats import ClassStatsCollector
from livar_bench.client.costs import params_bytes
from livar_bench.client.phase import base_deltas_applied
from livar_bench.client.signals import class_statistics
from livar_bench.client.train import LocalSettings, embed
from livar_bench.data.base import ImageSplit
from livar_bench.data.transforms import DeviceTransform
from livar_bench.models import LoraViT
from livar_bench.types import ClassStats, Params, Signal


class GlobalStatsPass:
    """Callable ``(params, with_cov) -> [ClassStats per client, in client-id order]``, with its cost.

    The download counted is the trainable params only; dense base corrections (``base_deltas``) are
    applied as the clients have them already.
    """

    def __init__(self, model: LoraViT, clients: Mapping[int, ImageSplit], transform: DeviceTransform,
                 num_classes: int, settings: LocalSettings, base_deltas: Mapping[str, torch.Tensor] | None = None) -> None:
        self.model, self.transform, self.num_classes, self.settings = model, transform, num_classes, settings
        self.base_deltas = base_deltas  # the round's dense base-weight corrections, applied during the pass
        self.clients = dict(sorted(clients.items()))
        self.seconds = 0.0
        self.upload_bytes = 0
        self.download_bytes = 0
        self.calls = 0

    def __call__(self, params: Params, with_cov: bool) -> list[ClassStats]:
        start = time.perf_counter()
        self.model.load_params(params)
        with base_deltas_applied(self.model, self.base_deltas):
            stats = [self._stats(data, with_cov) for data in self.clients.values()]
        device = next(iter(params.values())).device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.seconds += time.perf_counter() - start
        sent = frozenset({Signal.CLASS_COV if with_cov else Signal.CLASS_STATS})
        self.upload_bytes += sum(ClassStatsCollector().nbytes(s, sent) for s in stats)
        self.download_bytes += params_bytes(params) * len(self.clients)
        self.calls += 1
        return stats

    def _stats(self, data: ImageSplit, with_cov: bool) -> ClassStats:
        """A client's class statistics under the loaded params (as its end-of-training statistics)."""
        feats, logits = embed(self.model, data.images, self.transform, max(self.settings.batch_size, 256),
                              self.settings.autocast_dtype)
        return class_statistics(feats, data.labels, logits.argmax(1) == data.labels, self.num_classes, with_cov)

    def add_costs(self, costs: dict[str, float], num_clients: int) -> dict[str, float]:
        """The round's cost columns with this pass added (unchanged when it was not used).

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
