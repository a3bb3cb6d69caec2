"""CCVR: pooled Gaussian moments, robust sampling, and a calibrated head that separates classes."""

from __future__ import annotations

import torch

from livar_bench.client.signals import class_statistics
from livar_bench.methods import CCVR, parse_method
from livar_bench.methods.base import ClientUpdate, RoundContext, Signal
from livar_bench.ops.gaussian import covariance_factor, pool_moments, sample_gaussians


def client_features(g: torch.Generator, counts: list[int], means: torch.Tensor, std: float) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return means[labels] + std * torch.randn(len(labels), means.shape[1], generator=g), labels


def test_pooled_moments_equal_those_of_the_union() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 4, generator=g) * 3
    parts = [client_features(g, c, means, 1.0) for c in ([5, 0, 9], [7, 1, 2], [0, 0, 4])]
    stats = [class_statistics(f, y, torch.ones_like(y, dtype=torch.bool), 3, with_cov=True) for f, y in parts]
    feats, labels = torch.cat([f for f, _ in parts]), torch.cat([y for _, y in parts])
    total, mean, cov = pool_moments([s.count for s in stats], [s.mean for s in stats], [s.cov for s in stats])
    _, _, var = pool_moments([s.count for s in stats], [s.mean for s in stats], [s.var for s in stats])
    for c in (0, 2):
        x = feats[labels == c].double()
        assert int(total[c]) == len(x)
        torch.testing.assert_close(mean[c], x.mean(0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cov[c], torch.cov(x.T), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(var[c], x.var(0), rtol=1e-4, atol=1e-4)
    # class 1 has a single sample in total: its mean is that sample, its covariance is defined as zero
    torch.testing.assert_close(mean[1], feats[labels == 1][0].double(), rtol=1e-5, atol=1e-5)
    assert not cov[1].any() and not var[1].any()


def test_factor_of_an_indefinite_matrix_falls_back_to_its_psd_part() -> None:
    # eigenvalues 3 (v = [1, 1]/sqrt 2) and -1: the PSD part is 3 v v^T = [[1.5, 1.5], [1.5, 1.5]]
    bad = torch.tensor([[[1.0, 2.0], [2.0, 1.0]], [[2.0, 0.0], [0.0, 0.5]]], dtype=torch.float64)
    factors = covariance_factor(bad)
    torch.testing.assert_close(factors[0] @ factors[0].T, torch.full((2, 2), 1.5, dtype=torch.float64))
    torch.testing.assert_close(factors[1] @ factors[1].T, bad[1], rtol=1e-5, atol=1e-5)


def test_samples_have_the_requested_moments() -> None:
    cov = torch.tensor([[[2.0, 0.6], [0.6, 1.0]]], dtype=torch.float64)
    mean = torch.tensor([[1.0, -3.0]], dtype=torch.float64)
    x = sample_gaussians(mean, covariance_factor(cov), 20_000, torch.Generator().manual_seed(1))[0]
    torch.testing.assert_close(x.mean(0), mean[0], atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov[0], atol=0.08, rtol=0)


def separated_updates(g: torch.Generator, dim: int = 8) -> tuple[dict, list[ClientUpdate], torch.Tensor]:
    means = torch.eye(3, dim) * 4.0
    updates = []
    for k, counts in enumerate(([30, 30, 0], [0, 20, 40], [25, 0, 5])):
        f, y = client_features(g, counts, means, 0.5)
        stats = class_statistics(f, y, torch.ones_like(y, dtype=torch.bool), 3, with_cov=True)
        updates.append(ClientUpdate(k, len(y), torch.tensor(counts), {}, signals={"class_stats": stats}))
    # a head that starts wrong: it maps every class to class 0
    glob = {"head.weight": torch.zeros(3, dim).index_fill(0, torch.tensor([0]), 1.0), "head.bias": torch.zeros(3),
            "x.lora_A": torch.ones(2, 3)}
    return glob, updates, means


def test_ccvr_head_classifies_well_separated_gaussians() -> None:
    g = torch.Generator().manual_seed(0)
    glob, updates, means = separated_updates(g)
    test_x, test_y = client_features(g, [200, 200, 200], means, 0.5)
    for model in ("pooled_full", "pooled_diag", "client_diag"):
        out = CCVR(model=model)(glob, updates, RoundContext(1, 1, 3, 1.0, torch.Generator().manual_seed(0)))
        logits = test_x @ out["head.weight"].T + out["head.bias"]
        assert (logits.argmax(1) == test_y).float().mean() > 0.95
        assert out["x.lora_A"] is glob["x.lora_A"]  # only the head is touched


def test_ccvr_signals_and_composition() -> None:
    assert CCVR().requires == {Signal.CLASS_STATS}  # the reference's diagonal mixture
    assert CCVR(model="pooled_full").requires == {Signal.CLASS_COV}
    assert CCVR(model="pooled_diag").requires == {Signal.CLASS_STATS}
    assert CCVR(preset="paper").requires == frozenset()  # statistics come from the pass over the global model
    method = parse_method("ccvr")
    assert method.spec == "fedavg+ccvr" and type(method.aggregator).__name__ == "FedAvg" and len(method.stages) == 1
    assert type(parse_method("ties+ccvr").aggregator).__name__ == "TaskVectorMerge"
