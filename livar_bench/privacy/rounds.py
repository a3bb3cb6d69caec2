"""One round's releases made private: what the ``dp`` stage does to the client updates before any server step.

Per client (in client-id order, each with its own noise stream):

1. the update over the released keys is clipped to the round's bound C (``clipping.clip_params``);
2. Gaussian noise is added to it: std sigma C / sqrt(n) per contribution for ``central`` and
   ``distributed`` noise (n: the round's contributions; their sum then carries N(0, (sigma C)^2), the
   noise a server adding it to the sum would draw), sigma C for ``local`` (``noise.share_std``);
3. its weight is made public: every client counts alike (``num_samples`` = 1, the uniform mean of DP-FedAvg;
   a client's sample count is private and the aggregate's sensitivity would depend on everyone's);
4. its signals, if the method uses any, are clipped and noised by the client itself
   (``sensitivity.privatise_class_stats`` / ``privatise_lora_signal``), and ``class_counts`` repeats the
   private counts (or is all zeros when no class statistics are released); a signal the setting does not
   privatise is dropped, not released.

The server step that follows sees only these private updates, so whatever it computes is
post-processing; for a method whose server only sums, central noise on the sum and its split over the
contributions have the same distribution.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from livar_bench.privacy.clipping import clip_params
from livar_bench.privacy.noise import Placement, add_noise, share_std
from livar_bench.privacy.sensitivity import privatise_class_stats, privatise_lora_signal
from livar_bench.types import ClientUpdate, Params, Signal


@dataclass(frozen=True)
class RoundPrivacy:
    """Everything one round's privatisation needs (all resolved: no None means "same as sigma" here).

    Attributes:
        sigma: the update's noise multiplier.
        bound: the round's clipping bound C of the update (None: no clipping, only with sigma = 0).
        placement: where the update's noise is drawn.
        keys: the released keys (the method's frozen keys are not released).
        stats: (count_clip, stats_clip, multiplier) of the class statistics, or None when not released.
        signal: (signal_clip, multiplier) of LIVAR's signals, or None when not released.
    """

    sigma: float
    bound: float | None
    placement: Placement
    keys: tuple[str, ...]
    stats: tuple[float, float, float] | None = None
    signal: tuple[float, float] | None = None


def client_streams(server: torch.Generator, client_ids: Sequence[int]) -> dict[int, torch.Generator]:
    """One noise stream per client, derived from one draw of the server's stream (so a round with noise
    moves the server's stream by exactly one draw, whatever the number of clients)."""
    base = int(torch.randint(0, 2**62, (1,), generator=server, device=server.device))
    return {k: torch.Generator(device=server.device).manual_seed(base ^ (k * 0x9E3779B97F4A7C15 % 2**62))
            for k in client_ids}


def privatise(global_params: Params, updates: Sequence[ClientUpdate], setting: RoundPrivacy,
              server: torch.Generator, contributions: int | None = None) -> tuple[list[ClientUpdate], torch.Tensor]:
    """(the round's private updates, [n] the updates' norms before clipping, float64).

    Args:
        global_params: the round's global tensors (what the updates are deltas from).
        updates: the clients' updates.
        setting: the round's clipping, noise and releases.
        server: the server's stream of the round (one draw taken, for the clients' streams).
        contributions: n, the round's contributions the noise is split over (default: ``len(updates)``; a
            client privatising its own update under secure aggregation gives the round's number).
    """
    updates = sorted(updates, key=lambda u: u.client_id)
    n = len(updates) if contributions is None else contributions
    std = share_std(setting.sigma * (setting.bound or 0.0), max(n, 1), setting.placement)
    noisy = std > 0 or setting.stats is not None and setting.stats[2] > 0 or \
        setting.signal is not None and setting.signal[1] > 0
    streams = client_streams(server, [u.client_id for u in updates]) if noisy else {}
    out, norms = [], []
    for u in updates:
        stream = streams.get(u.client_id, torch.Generator(device=server.device))
        if setting.bound is not None:
            params, norm = clip_params(global_params, u.params, setting.bound, setting.keys)
        else:
            params = dict(u.params)
            norm = torch.sqrt(sum(((u.params[k].double() - global_params[k].double()) ** 2).sum()
                                  for k in setting.keys))
        norms.append(norm.to("cpu"))
        params = add_noise(params, std, stream, setting.keys)
        # only what the setting privatises is released: a signal it does not cover is dropped (a client asked
        # only for the method's signals would not have sent it)
        signals = {}
        counts = torch.zeros_like(u.class_counts)
        stats = u.signals.get(Signal.CLASS_STATS.value)
        if stats is not None and setting.stats is not None:
            count_clip, stats_clip, multiplier = setting.stats
            stats = privatise_class_stats(stats, count_clip=count_clip, stats_clip=stats_clip, multiplier=multiplier,
                                          generator=stream)
            signals[Signal.CLASS_STATS.value] = stats
            counts = stats.count.to(u.class_counts.device)
        lora = u.signals.get(Signal.LORA_SIGNAL.value)
        if lora is not None and setting.signal is not None:
            signal_clip, multiplier = setting.signal
            signals[Signal.LORA_SIGNAL.value] = privatise_lora_signal(lora, signal_clip=signal_clip,
                                                                      multiplier=multiplier, generator=stream)
        out.append(dataclasses.replace(u, params=params, num_samples=1, class_counts=counts, signals=signals))
    return out, torch.stack(norms) if norms else torch.zeros(0, dtype=torch.float64)
