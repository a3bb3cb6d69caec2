"""A round's releases made private (privacy.rounds.privatise): clipping, noise shares, public weights, signals."""

from __future__ import annotations

import math

import pytest
import torch

from livar_bench.privacy.clipping import clip_params
from livar_bench.privacy.rounds import RoundPrivacy, privatise
from livar_bench.types import ClassStats, ClientUpdate, Signal

KEYS = ("a.lora_A", "a.lora_B", "head.weight")


def update(k: int, scale: float = 1.0, signals: dict | None = None) -> ClientUpdate:
    g = torch.Generator().manual_seed(k)
    params = {key: scale * torch.randn(3, 4, generator=g) for key in KEYS}
    return ClientUpdate(client_id=k, num_samples=10 * (k + 1), class_counts=torch.tensor([k, 1, 2]), params=params,
                        signals=signals or {})


def zeros() -> dict[str, torch.Tensor]:
    return {key: torch.zeros(3, 4) for key in KEYS}


def test_clipping_only_clips_each_update_and_makes_weights_public() -> None:
    ups = [update(2, 5.0), update(0, 5.0), update(1, 0.01)]
    setting = RoundPrivacy(sigma=0.0, bound=1.0, placement="central", keys=KEYS)
    out, norms = privatise(zeros(), ups, setting, torch.Generator())
    assert [u.client_id for u in out] == [0, 1, 2]
    for u, raw in zip(out, sorted(ups, key=lambda u: u.client_id), strict=True):
        expected, norm = clip_params(zeros(), raw.params, 1.0, KEYS)
        assert all(torch.equal(u.params[k], expected[k]) for k in KEYS)
        assert u.num_samples == 1 and u.class_counts.sum() == 0
    assert norms[1] < 1.0 < norms[0]


def test_central_noise_on_the_sum_has_std_sigma_times_clip() -> None:
    """Sum over n clients of the noisy (zero) updates: the noise of a server adding N(0, (sigma C)^2) to the sum."""
    n, sigma, bound, trials = 5, 2.0, 0.5, 400
    g = torch.Generator().manual_seed(0)
    setting = RoundPrivacy(sigma=sigma, bound=bound, placement="central", keys=KEYS)
    sums = []
    for _ in range(trials):
        out, _ = privatise(zeros(), [ClientUpdate(k, 1, torch.zeros(3), zeros()) for k in range(n)], setting, g)
        sums.append(torch.cat([sum(u.params[k] for u in out).flatten() for k in KEYS]))
    draws = torch.cat(sums).double()
    m = draws.numel()
    assert abs(float(draws.var()) - (sigma * bound) ** 2) < 5 * (sigma * bound) ** 2 * math.sqrt(2 / (m - 1))
    local = RoundPrivacy(sigma=sigma, bound=bound, placement="local", keys=KEYS)
    big = {k: torch.zeros(300, 100) for k in KEYS}
    out, _ = privatise(big, [ClientUpdate(0, 1, torch.zeros(3), dict(big))], local, g)
    assert float(out[0].params["a.lora_A"].double().std()) == pytest.approx(sigma * bound, rel=0.02)


def test_frozen_keys_are_neither_clipped_nor_noised() -> None:
    setting = RoundPrivacy(sigma=1.0, bound=0.1, placement="local", keys=("a.lora_B", "head.weight"))
    raw = update(0, 3.0)
    out, _ = privatise(zeros(), [raw], setting, torch.Generator().manual_seed(1))
    assert torch.equal(out[0].params["a.lora_A"], raw.params["a.lora_A"])
    assert not torch.equal(out[0].params["head.weight"], raw.params["head.weight"])


def test_signals_are_privatised_and_counts_follow_the_private_statistics() -> None:
    stats = ClassStats(count=torch.tensor([4, 0, 6]), mean=torch.ones(3, 2, dtype=torch.float64),
                       var=torch.ones(3, 2, dtype=torch.float64), count_correct=torch.tensor([2, 0, 6]),
                       var_correct=torch.ones(3, 2, dtype=torch.float64))
    lora = {"a.lora_A": torch.tensor(2.0), "a.lora_B": torch.tensor(1.0)}
    raw = update(0, signals={Signal.CLASS_STATS.value: stats, Signal.LORA_SIGNAL.value: lora})
    setting = RoundPrivacy(sigma=0.0, bound=1.0, placement="local", keys=KEYS, stats=(1e6, 1e6, 0.0), signal=(1.0, 0.0))
    out, _ = privatise(zeros(), [raw], setting, torch.Generator())
    assert torch.equal(out[0].class_counts, stats.count)
    assert float(out[0].signals[Signal.LORA_SIGNAL.value]["a.lora_A"]) == pytest.approx(2 / math.sqrt(5))
    bare, _ = privatise(zeros(), [raw], RoundPrivacy(sigma=1.0, bound=1.0, placement="local", keys=KEYS),
                        torch.Generator())
    assert bare[0].signals == {}  # what the setting does not privatise is not released


def test_noise_streams_are_per_client_and_reproducible() -> None:
    setting = RoundPrivacy(sigma=1.0, bound=1.0, placement="local", keys=KEYS)
    first, _ = privatise(zeros(), [update(0), update(1)], setting, torch.Generator().manual_seed(3))
    again, _ = privatise(zeros(), [update(1), update(0)], setting, torch.Generator().manual_seed(3))
    alone, _ = privatise(zeros(), [update(1)], setting, torch.Generator().manual_seed(3))
    assert all(torch.equal(a.params[k], b.params[k]) for a, b in zip(first, again, strict=True) for k in KEYS)
    assert all(torch.equal(first[1].params[k], alone[0].params[k]) for k in KEYS)  # client 1's noise is its own
    g = torch.Generator().manual_seed(3)
    privatise(zeros(), [update(0)], RoundPrivacy(sigma=0.0, bound=None, placement="central", keys=KEYS), g)
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(3).get_state())  # no noise: no draw
