"""The Dirichlet concentration's upper bound (issue 26): numpy's draw at the bound and past it, the bound
in every place alpha is given, and the LIVAR reference draw unchanged for every alpha below it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livar_bench.config import make_spec
from livar_bench.data.partitioners import PartitionData, dirichlet_partition
from livar_bench.data.partitioners.base import MAX_ALPHA
from livar_bench.errors import BenchError

ABOVE = float(np.nextafter(MAX_ALPHA, np.inf))


def reference_draw(labels: np.ndarray, num_clients: int, alpha: float, seed: int, min_size: int) -> list[list[int]]:
    """The LIVAR reference code's partition, written out from PAPER.md: per class (sorted), p ~ Dir(alpha 1_K),
    then each sample of the class to client k with probability p_k; redraw everything until each client
    holds min_size samples."""
    rng = np.random.default_rng(seed)
    while True:
        owner = np.empty(len(labels), dtype=np.int64)
        for c in sorted(set(labels.tolist())):
            members = np.flatnonzero(labels == c)
            p = rng.dirichlet([alpha] * num_clients)
            owner[members] = rng.choice(num_clients, size=len(members), p=p)
        clients = [sorted(np.flatnonzero(owner == k).tolist()) for k in range(num_clients)]
        if min(len(c) for c in clients) >= min_size:
            return clients


@settings(max_examples=30, deadline=None)
# At most 4 clients for the 4 classes: at alpha near 1e-3 each class goes to one client, so 5 or 6 clients can never
# all get a sample (the partitioner refuses after its attempts, the reference draw would loop for ever).
@given(log_alpha=st.floats(-3.0, 100.0), num_clients=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_the_reference_draw_is_unchanged_up_to_the_bound(log_alpha, num_clients, seed):
    alpha = min(10.0 ** log_alpha, MAX_ALPHA)
    labels = np.repeat(np.arange(4), 15)
    part = dirichlet_partition(labels, num_clients, alpha, np.random.default_rng(seed), min_size=1)
    assert [ix.tolist() for ix in part.client_indices] == reference_draw(labels, num_clients, alpha, seed, 1)


def test_numpy_draws_at_the_bound_for_any_count_and_overflows_far_above_it():
    # At the bound a million clients still get finite shares, all exactly equal (nothing is lost by the bound:
    # every gamma draw is alpha - 1/3 to double precision from about 1e33 up).
    for k in (2, 1_000_000):
        p = np.random.default_rng(0).dirichlet(np.full(k, MAX_ALPHA))
        assert np.isfinite(p).all() and p.min() == p.max() and abs(p.sum() - 1) < 1e-9
    p = np.random.default_rng(0).dirichlet(np.full(1000, 1e33))
    assert p.min() == p.max()
    # Past 1.8e308 / K the sum of the gamma draws overflows: the shares are not a distribution any more.
    for k, alpha in ((2, 1e308), (100, 1e307)):
        p = np.random.default_rng(0).dirichlet(np.full(k, alpha))
        assert not (np.isfinite(p).all() and abs(p.sum() - 1) < 1e-9)
        with pytest.raises(ValueError, match="do not sum to 1"):
            np.random.default_rng(0).choice(k, size=3, p=p)


@pytest.mark.parametrize("values", [
    {"alpha": ABOVE}, {"alpha": 1e308}, {"alpha": ABOVE, "partition": "iid"},
    {"partition": f"dirichlet[alpha={ABOVE!r}]"}, {"partition": "balanced_dirichlet", "alpha": 1e200},
    {"partition": "quantity[labels=dirichlet,alpha=1e101]"},
])
def test_every_alpha_above_the_bound_is_refused_naming_it(values):
    with pytest.raises(BenchError, match=r"alpha: at most 1e100 \(a larger Dirichlet concentration overflows"):
        make_spec(values)


def test_the_bound_itself_is_accepted_and_draws_in_every_scheme_that_reads_alpha():
    labels = np.repeat(np.arange(3), 10)
    for text in ("dirichlet", "dirichlet[counts=shares]", "balanced_dirichlet", "quantity[labels=dirichlet]"):
        spec = make_spec({"alpha": MAX_ALPHA, "num_clients": 3, "partition": text})
        part = spec.partition_spec.draw(PartitionData(labels), 3, np.random.default_rng(0), 1)
        assert sorted(np.concatenate(part.client_indices).tolist()) == list(range(30)), text
