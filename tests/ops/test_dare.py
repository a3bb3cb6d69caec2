"""DARE's drop-and-rescale: the rule on given draws, unbiasedness, determinism, bounds."""

from __future__ import annotations

import pytest
import torch

from livar_bench.ops.dare import dare


def test_dare_applies_the_rule_to_the_generators_draws() -> None:
    taus = torch.arange(1.0, 13.0, dtype=torch.float64).reshape(2, 6)
    out, keep = dare(taus, 0.25, torch.Generator().manual_seed(5))
    draws = torch.rand(taus.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = torch.where(draws >= 0.25, taus / 0.75, torch.zeros_like(taus))  # written out from the paper
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert torch.equal(keep, draws >= 0.25)


def test_dare_is_unbiased_and_drops_the_asked_fraction() -> None:
    taus = torch.full((1, 200_000), 2.0, dtype=torch.float64)
    out, keep = dare(taus, 0.9, torch.Generator().manual_seed(0))
    assert abs(float(keep.double().mean()) - 0.1) < 0.005  # 0.005 ~ 7 standard errors
    assert abs(float(out.mean()) - 2.0) < 0.1


def test_dare_without_dropping_is_the_identity_and_seeded() -> None:
    taus = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1))
    same, keep = dare(taus, 0.0, torch.Generator().manual_seed(2))
    assert torch.equal(same, taus) and bool(keep.all())
    a, _ = dare(taus, 0.5, torch.Generator().manual_seed(9))
    b, _ = dare(taus, 0.5, torch.Generator().manual_seed(9))
    c, _ = dare(taus, 0.5, torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)
    no_rescale, keep = dare(taus, 0.5, torch.Generator().manual_seed(9), rescale=False)
    torch.testing.assert_close(no_rescale, torch.where(keep, taus, torch.zeros_like(taus)))


@pytest.mark.parametrize("drop", [1.0, -0.1, 1.5])
def test_dare_refuses_impossible_drop_rates(drop: float) -> None:
    with pytest.raises(ValueError, match=r"drop must be in \[0, 1\)"):
        dare(torch.ones(2, 2), drop, torch.Generator())
