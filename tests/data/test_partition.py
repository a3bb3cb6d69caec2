"""Partitioners: determinism, exact cover, minimum sizes, alpha behaviour and impossible settings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livar_bench.data.partition import Partition, dirichlet_partition, heterogeneity, iid_partition
from livar_bench.errors import BenchError


def _labels(num_classes: int, per_class: int) -> np.ndarray:
    return np.repeat(np.arange(num_classes), per_class)


def _assert_exact_cover(part: Partition, n: int) -> None:
    every = np.concatenate(part.client_indices)
    assert len(every) == n  # no sample twice ...
    assert np.array_equal(np.sort(every), np.arange(n))  # ... and none missing
    for ix in part.client_indices:
        assert np.all(np.diff(ix) > 0)  # sorted, no duplicates within a client


@settings(max_examples=25, deadline=None)
@given(
    num_classes=st.integers(1, 6),
    per_class=st.integers(5, 30),
    num_clients=st.integers(1, 5),
    alpha=st.floats(0.05, 50.0),
    seed=st.integers(0, 2**31),
)
def test_dirichlet_cover_sizes_and_determinism(num_classes, per_class, num_clients, alpha, seed):
    labels = _labels(num_classes, per_class)
    min_size = 2
    if num_clients * min_size > len(labels):
        return
    try:
        a = dirichlet_partition(labels, num_clients, alpha, np.random.default_rng(seed), min_size)
    except BenchError:
        # Allowed only when the minimum is genuinely hard to reach (tiny alpha, few samples).
        assert alpha < 0.5 or len(labels) < 4 * num_clients * min_size
        return
    b = dirichlet_partition(labels, num_clients, alpha, np.random.default_rng(seed), min_size)
    assert a.num_clients == num_clients
    _assert_exact_cover(a, len(labels))
    assert a.sizes().sum() == len(labels)
    assert a.sizes().min() >= min_size
    assert a.fingerprint() == b.fingerprint()
    assert all(np.array_equal(x, y) for x, y in zip(a.client_indices, b.client_indices, strict=True))


def test_different_seeds_give_different_partitions():
    labels = _labels(10, 50)
    prints = {dirichlet_partition(labels, 5, 0.5, np.random.default_rng(s)).fingerprint() for s in range(5)}
    assert len(prints) == 5


def test_smaller_alpha_is_more_heterogeneous_on_average():
    labels = _labels(10, 100)

    def mean_tv(alpha: float) -> float:
        tvs = [
            heterogeneity(dirichlet_partition(labels, 5, alpha, np.random.default_rng(s), 1).class_counts(labels, 10))[
                "tv_distance"
            ]
            for s in range(8)
        ]
        return float(np.mean(tvs))

    tv = [mean_tv(a) for a in (0.05, 0.5, 100.0)]
    assert tv[0] > tv[1] > tv[2]
    assert tv[2] < 0.1  # alpha -> infinity approaches IID
    assert tv[0] > 0.5


def test_iid_partition_cover_near_equal_and_low_skew():
    labels = _labels(10, 40)
    part = iid_partition(len(labels), 7, np.random.default_rng(3))
    _assert_exact_cover(part, len(labels))
    assert part.sizes().max() - part.sizes().min() <= 1
    again = iid_partition(len(labels), 7, np.random.default_rng(3))
    assert part.fingerprint() == again.fingerprint()
    tv_iid = heterogeneity(part.class_counts(labels, 10))["tv_distance"]
    tv_skew = heterogeneity(
        dirichlet_partition(labels, 7, 0.1, np.random.default_rng(3), 1).class_counts(labels, 10)
    )["tv_distance"]
    assert tv_iid < tv_skew


def test_heterogeneity_hand_computed():
    # Global class distribution (6, 6) / 12 = (0.5, 0.5).
    # Client 0 = (1, 0): TV = 0.5 * (0.5 + 0.5) = 0.5.  Client 1 = (0.25, 0.75): TV = 0.5 * (0.25 + 0.25) = 0.25.
    counts = np.array([[4, 0], [2, 6]])
    h = heterogeneity(counts)
    assert h["tv_distance"] == pytest.approx((0.5 + 0.25) / 2)
    assert h["class_coverage"] == pytest.approx((0.5 + 1.0) / 2)


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_non_positive_alpha_is_a_bench_error(alpha):
    with pytest.raises(BenchError, match="alpha"):
        dirichlet_partition(_labels(3, 10), 2, alpha, np.random.default_rng(0))


def test_more_clients_than_samples_is_a_bench_error():
    with pytest.raises(BenchError, match="fewer --clients"):
        dirichlet_partition(_labels(2, 5), 11, 1.0, np.random.default_rng(0), min_size=1)
    with pytest.raises(BenchError, match="fewer --clients"):
        iid_partition(10, 11, np.random.default_rng(0), min_size=1)
    with pytest.raises(BenchError, match="fewer --clients"):
        iid_partition(10, 3, np.random.default_rng(0), min_size=4)  # 3 * 4 > 10


def test_unreachable_minimum_gives_up_with_advice(monkeypatch):
    import livar_bench.data.partitioners.base as base

    monkeypatch.setattr(base, "MAX_ATTEMPTS", 20)
    # 20 samples of one class over 4 clients with min 5 each needs an exactly even multinomial draw;
    # at alpha 0.01 one client gets almost everything.
    with pytest.raises(BenchError, match="raise alpha"):
        dirichlet_partition(_labels(1, 20), 4, 0.01, np.random.default_rng(0), min_size=5)
