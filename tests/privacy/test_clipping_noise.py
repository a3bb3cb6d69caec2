"""Clipping (fixed, as the clip stage; adaptive, Andrew et al. 2021), noise variance and placement, and the
private forms of the released signals."""

from __future__ import annotations

import math

import pytest
import torch

from livar_bench.errors import BenchError
from livar_bench.methods.clip import ClipUpdate
from livar_bench.privacy import (
    QuantileClip,
    add_noise,
    check_bound,
    clip_params,
    delta_norm,
    privatise_class_stats,
    privatise_lora_signal,
    share_std,
)
from livar_bench.types import ClassStats, RoundContext, ServerState


def params(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"blocks.0.attn.qkv.lora_A": scale * torch.randn(2, 6, generator=g),
            "blocks.0.attn.qkv.lora_B": scale * torch.randn(18, 2, generator=g),
            "head.weight": scale * torch.randn(3, 6, generator=g), "head.bias": scale * torch.randn(3, generator=g)}


def ctx() -> RoundContext:
    return RoundContext(round=1, num_rounds=1, num_classes=3, lora_scale=1.0, generator=torch.Generator())


@pytest.mark.parametrize("bound", [0.1, 1.0, 1e6])
def test_clipping_one_update_equals_the_clip_stage_bit_for_bit(bound: float) -> None:
    base, trained = params(0), params(1)
    ours, norm = clip_params(base, trained, bound)
    stage = ClipUpdate(max_norm=bound).apply(ServerState(base), ServerState(trained), [], ctx()).params
    for k in base:
        assert torch.equal(ours[k], stage[k]), k
    assert float(norm) == pytest.approx(math.sqrt(sum(float(((trained[k] - base[k]).double() ** 2).sum()) for k in base)))


def test_clipped_norm_is_the_bound_and_direction_is_kept() -> None:
    base, trained = params(0), params(1, scale=5.0)
    clipped, norm = clip_params(base, trained, 0.5)
    assert float(delta_norm(base, clipped, base)) == pytest.approx(0.5, rel=1e-6)
    k = "head.weight"
    ratio = (clipped[k] - base[k]).double() / (trained[k] - base[k]).double()
    assert torch.allclose(ratio, torch.full_like(ratio, 0.5 / float(norm)), rtol=1e-4)
    small, _ = clip_params(base, params(0), 0.5)  # a zero update is left as it is
    assert all(torch.equal(small[k], base[k]) for k in base)


def test_clipping_only_the_released_keys() -> None:
    base, trained = params(0), params(1, scale=3.0)
    keys = ["head.weight", "head.bias"]
    clipped, _ = clip_params(base, trained, 0.1, keys)
    assert torch.equal(clipped["blocks.0.attn.qkv.lora_A"], trained["blocks.0.attn.qkv.lora_A"])
    assert float(delta_norm(base, clipped, keys)) == pytest.approx(0.1, rel=1e-6)


@pytest.mark.parametrize("std", [0.3, 2.0])
def test_noise_has_the_variance_asked_for(std: float) -> None:
    """Sample variance of n = 200,000 draws: its std is sigma^2 sqrt(2 / (n - 1)); 5 of those is the band."""
    zeros = {"a": torch.zeros(400, 250), "b": torch.zeros(100, 1000)}
    noisy = add_noise(zeros, std, torch.Generator().manual_seed(7))
    draws = torch.cat([noisy["a"].flatten(), noisy["b"].flatten()]).double()
    n = draws.numel()
    assert abs(float(draws.mean())) < 5 * std / math.sqrt(n)
    assert abs(float(draws.var()) - std**2) < 5 * std**2 * math.sqrt(2 / (n - 1))
    assert noisy["a"].dtype == torch.float32
    assert add_noise(zeros, 0.0, torch.Generator())["a"].abs().sum() == 0


def test_distributed_shares_sum_to_the_central_noise() -> None:
    m, std, n = 8, 1.5, 100_000
    share = share_std(std, m, "distributed")
    g = torch.Generator().manual_seed(3)
    total = sum(add_noise({"x": torch.zeros(n)}, share, g)["x"].double() for _ in range(m))
    assert abs(float(total.var()) - std**2) < 5 * std**2 * math.sqrt(2 / (n - 1))
    assert share_std(std, m, "central") == share
    assert share_std(std, m, "local") == std


def test_adaptive_clipping_moves_towards_the_target_quantile() -> None:
    norms = torch.linspace(0.1, 10.0, 100)  # the 30% quantile is about 3.1
    clip = QuantileClip(target=0.3, lr=0.2, count_std=1e-9)
    g = torch.Generator().manual_seed(0)
    bound, fraction = clip.next_bound(1.0, norms, 100, g)
    assert fraction == pytest.approx(float((norms <= 1.0).sum()) / 100)  # no noise to speak of
    assert bound == pytest.approx(math.exp(-0.2 * (fraction - 0.3)))
    for _ in range(300):
        bound, _ = clip.next_bound(bound, norms, 100, g)
    assert float((norms <= bound).double().mean()) == pytest.approx(0.3, abs=0.02)
    assert clip.count_multiplier == 2e-9  # the centred count's sensitivity is 1/2


def test_adaptive_clipping_count_noise_has_its_std() -> None:
    clip = QuantileClip(target=0.5, lr=0.2, count_std=3.0)
    g = torch.Generator().manual_seed(1)
    norms = torch.ones(10)
    fractions = torch.tensor([clip.next_bound(2.0, norms, 10, g)[1] for _ in range(4000)])
    n = len(fractions)
    # b = (10 + N(0, 9)) / 10: mean 1, variance 0.09
    assert abs(float(fractions.mean()) - 1.0) < 5 * 0.3 / math.sqrt(n)
    assert abs(float(fractions.var()) - 0.09) < 5 * 0.09 * math.sqrt(2 / (n - 1))


def stats(c: int = 3, d: int = 4) -> ClassStats:
    g = torch.Generator().manual_seed(5)
    return ClassStats(count=torch.tensor([5, 0, 12]), mean=torch.randn(c, d, generator=g, dtype=torch.float64),
                      var=torch.rand(c, d, generator=g, dtype=torch.float64),
                      count_correct=torch.tensor([3, 0, 10]),
                      var_correct=torch.rand(c, d, generator=g, dtype=torch.float64))


def test_private_class_stats_without_noise_and_loose_bounds_are_unchanged() -> None:
    s = stats()
    out = privatise_class_stats(s, count_clip=1e6, stats_clip=1e6, multiplier=0.0, generator=torch.Generator())
    for name in ("count", "count_correct", "mean", "var", "var_correct"):
        assert torch.allclose(getattr(out, name).double(), getattr(s, name).double()), name


def test_private_class_stats_are_clipped_per_part_and_post_processed() -> None:
    s = stats()
    out = privatise_class_stats(s, count_clip=2.0, stats_clip=0.5, multiplier=0.0, generator=torch.Generator())
    assert float(torch.linalg.vector_norm(out.mean.double())) == pytest.approx(0.5)
    both = torch.cat([s.count, s.count_correct]).double()
    assert torch.equal(out.count, (both[:3] * 2.0 / both.norm()).round().long())
    noisy = privatise_class_stats(s, count_clip=2.0, stats_clip=0.5, multiplier=5.0, generator=torch.Generator().manual_seed(0))
    assert (noisy.count >= 0).all() and (noisy.count_correct <= noisy.count).all()
    assert (noisy.var >= 0).all() and (noisy.var_correct >= 0).all()


def test_private_class_stats_noise_std_is_multiplier_times_bound() -> None:
    d = 20_000
    zero = ClassStats(count=torch.zeros(1, dtype=torch.long), mean=torch.zeros(1, d, dtype=torch.float64),
                      var=torch.zeros(1, d, dtype=torch.float64), count_correct=torch.zeros(1, dtype=torch.long),
                      var_correct=torch.zeros(1, d, dtype=torch.float64))
    out = privatise_class_stats(zero, count_clip=1.0, stats_clip=0.25, multiplier=2.0, generator=torch.Generator().manual_seed(2))
    assert abs(float(out.mean.var()) - 0.25) < 5 * 0.25 * math.sqrt(2 / (d - 1))  # std 2 x 0.25


def test_private_lora_signal() -> None:
    signals = {"a.lora_A": torch.tensor(3.0), "a.lora_B": torch.tensor(4.0)}
    out = privatise_lora_signal(signals, signal_clip=1.0, multiplier=0.0, generator=torch.Generator())
    assert float(out["a.lora_A"]) == pytest.approx(0.6) and float(out["a.lora_B"]) == pytest.approx(0.8)
    noisy = privatise_lora_signal(signals, signal_clip=1.0, multiplier=10.0, generator=torch.Generator().manual_seed(0))
    assert all(float(v) >= 0 for v in noisy.values()) and set(noisy) == set(signals)


@pytest.mark.parametrize("value", [0.0, -1.0, float("inf"), float("nan")])
def test_zero_or_bad_clip(value: float) -> None:
    with pytest.raises(BenchError, match="clipping bound > 0"):
        check_bound("clip", value)
    with pytest.raises(BenchError, match="clipping bound > 0"):
        privatise_lora_signal({"a": torch.tensor(1.0)}, signal_clip=value, multiplier=1.0, generator=torch.Generator())


def test_bad_adaptive_clipping_settings() -> None:
    with pytest.raises(BenchError, match="quantile"):
        QuantileClip(target=1.0)
    with pytest.raises(BenchError, match="clipping bound > 0"):
        QuantileClip(count_std=0.0)
