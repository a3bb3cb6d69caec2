"""Communication and memory costs of a federated run.

Bytes are counted from what a ``ClientUpdate`` actually carries for the signals the method requires
(``Method.requires``), at the tensors' own dtypes (what a real deployment would serialise, before any
compression):

- upload, every method: the trainable tensors (LoRA factors + head), the sample count (one int64) and
  the per-class sample counts ([C] int64; FedAvg needs the count, class-aware methods the histogram).
- ``Signal.CLASS_STATS`` (LIVAR's variance-weighted head): per-class count and correct-count ([C] int64
  each), mean, variance and correct-sample variance ([C, D] each). LIVAR reduces the variances to one
  scalar per class on the server, but the update carries the full [C, D] tensors, and that is counted.
- ``Signal.CLASS_COV`` (CCVR): the class statistics above plus the [C, D, D] covariances.
- ``Signal.LORA_SIGNAL`` (LIVAR's path integrals): one scalar per LoRA factor.
- ``Signal.INPUT_GRAM`` (RegMean): one [in, in] float32 Gram matrix per LoRA-adapted layer and [D, D] for
  the head, counted in full.
- ``Signal.FISHER`` (Fisher merging): one diagonal Fisher tensor per trainable tensor (the params' size).
- download: the global trainable tensors the server broadcasts at the start of a round, plus any dense
  corrections to the frozen base weights that the method keeps in its server state, plus the tensors a
  method sends each client for its objective (SCAFFOLD's c - c_i: the download doubles).
- what a method's clients upload of their tensors follows its ``client_side()``: RoLoRA's frozen factor is
  not counted (uploads halve), SCAFFOLD's control-variate update is (uploads double).

Each signal's byte count is its collector's (``client/collectors/``).

Counting reads only shapes and dtypes (``numel`` and ``element_size``), so it never synchronises a
device. Peak memory is the device's (``livar_bench.device.peak_memory``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from torch import Tensor

from livar_bench.client.collectors import signal_bytes
from livar_bench.types import ClientUpdate, Signal

INT64_BYTES = 8


def tensor_bytes(tensors: Iterable[Tensor | None]) -> int:
    """Total bytes of the given tensors at their dtypes (``None`` entries count zero)."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def params_bytes(params: Mapping[str, Tensor]) -> int:
    """Bytes of a trainable-parameter dictionary (what a download or the params part of an upload weighs)."""
    return tensor_bytes(params.values())


def upload_breakdown(update: ClientUpdate, requires: Collection[Signal], keys: Collection[str] | None = None,
                     copies: int = 1) -> dict[str, int]:
    """Bytes of one client's upload, by part: params, meta, then one entry per signal the method asked for
    (each collector's own count: ``class_stats``, ``lora_signal``).

    ``keys``: the trainable tensors the upload carries (None: all of them; RoLoRA leaves the frozen factor
    out); ``copies``: tensors of each one's size sent (SCAFFOLD: 2, the model and the control-variate update).
    """
    params = update.params if keys is None else {k: update.params[k] for k in keys if k in update.params}
    return {
        "params": copies * params_bytes(params),
        "meta": INT64_BYTES + tensor_bytes([update.class_counts]),
        **signal_bytes(update, requires),
    }


def upload_bytes(update: ClientUpdate, requires: Collection[Signal]) -> int:
    """Total bytes one client uploads in a round."""
    return sum(upload_breakdown(update, requires).values())


def round_costs(updates: Iterable[ClientUpdate], download: Iterable[Mapping[str, Tensor]],
                requires: Collection[Signal], upload_keys: Collection[str] | None = None,
                upload_copies: int = 1) -> dict[str, float]:
    """Per-client-per-round communication of one round (means over the round's clients).

    ``download``: the tensor dictionaries a client receives at the start of the round (the global params
    and, for methods that keep them, the dense base-weight corrections and the tensors its objective
    reads); ``upload_keys``, ``upload_copies``: what the upload's params part carries (``upload_breakdown``).
    """
    parts = [upload_breakdown(u, requires, upload_keys, upload_copies) for u in updates]
    n = max(len(parts), 1)
    signal_total = sum(sum(v for k, v in p.items() if k not in ("params", "meta")) for p in parts)
    return {
        "upload_bytes_per_client": sum(sum(p.values()) for p in parts) / n,
        "upload_signal_bytes_per_client": signal_total / n,
        "download_bytes_per_client": float(sum(params_bytes(d) for d in download)),
    }
