"""TIES-merging and task arithmetic: hand-computed steps and the presets' relations."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from livar_bench.methods import TaskArithmetic, TaskVectorMerge, parse_method
from livar_bench.methods.base import ClientUpdate, RoundContext
from livar_bench.ops.ties import agreeing_mask, elect_sign, merge_task_vectors, trim_mask


def ctx() -> RoundContext:
    return RoundContext(1, 1, 2, 1.0, torch.Generator().manual_seed(0))


def clients(glob: dict, taus: list[list[float]]) -> list[ClientUpdate]:
    return [ClientUpdate(k, 1 + k, torch.zeros(2), {"w": glob["w"] + torch.tensor(t)}) for k, t in enumerate(taus)]


def test_trim_keeps_the_largest_magnitudes() -> None:
    taus = torch.tensor([[3.0, -1.0, 0.5, -2.0], [-1.0, 2.0, 0.2, -3.0]])
    assert trim_mask(taus, 0.5).tolist() == [[True, False, False, True], [False, True, False, True]]
    assert trim_mask(taus, 0.0).sum() == 0
    assert trim_mask(taus, 1.0).all()


def test_ties_by_hand() -> None:
    # kept (density 0.5): client 0 -> [3, 0, 0, -2], client 1 -> [0, 2, 0, -3]
    # elected sign of sums [3, 2, 0, -5]: +, +, + (zero elects +), -
    # disjoint mean: [3, 2, 0 (nobody kept it), (-2 - 3) / 2]
    taus = torch.tensor([[3.0, -1.0, 0.5, -2.0], [-1.0, 2.0, 0.2, -3.0]])
    merged = merge_task_vectors(taus, density=0.5, sign_election=True)
    torch.testing.assert_close(merged, torch.tensor([3.0, 2.0, 0.0, -2.5]))
    glob = {"w": torch.tensor([1.0, 1.0, 1.0, 1.0])}
    out = TaskVectorMerge(density=0.5, lam=0.5)(glob, clients(glob, taus.tolist()), ctx())
    torch.testing.assert_close(out["w"], torch.tensor([2.5, 2.0, 1.0, -0.25]))


def test_sign_election_drops_the_minority_and_zeros() -> None:
    # column 0: +4 + -1 + 0 -> elected +, only the 4 agrees (the exact zero agrees with no sign)
    taus = torch.tensor([[4.0], [-1.0], [0.0]])
    kept = torch.ones_like(taus, dtype=torch.bool)
    sign = elect_sign(taus, kept)
    assert sign.tolist() == [1.0]
    assert agreeing_mask(taus, kept, sign).flatten().tolist() == [True, False, False]
    torch.testing.assert_close(merge_task_vectors(taus, sign_election=True), torch.tensor([4.0]))
    torch.testing.assert_close(merge_task_vectors(taus, sign_election=False), torch.tensor([1.0]))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), num_clients=st.integers(1, 5), lam=st.floats(-1.0, 2.0),
       reduce=st.sampled_from(["mean", "sum"]))
def test_ties_at_full_density_without_election_is_task_arithmetic(seed: int, num_clients: int, lam: float,
                                                                   reduce: str) -> None:
    g = torch.Generator().manual_seed(seed)
    glob = {"a": torch.randn(3, 4, generator=g), "b": torch.randn(5, generator=g)}
    updates = [ClientUpdate(k, 1, torch.zeros(2), {n: v + torch.randn(v.shape, generator=g) for n, v in glob.items()})
               for k in range(num_clients)]
    ties = TaskVectorMerge(density=1.0, sign_election=False, lam=lam, reduce=reduce, trim="tensor")(glob, updates, ctx())
    ties_global = TaskVectorMerge(density=1.0, sign_election=False, lam=lam, reduce=reduce)(glob, updates, ctx())
    ta = TaskArithmetic(lam=lam, reduce=reduce)(glob, updates, ctx())
    for key in glob:
        assert torch.equal(ties[key], ta[key])
        torch.testing.assert_close(ties_global[key], ta[key])  # the same sums, in another memory layout
        # and task arithmetic is global + lam * mean (or sum) of the task vectors, written out here
        taus = torch.stack([u.params[key] - glob[key] for u in updates])
        combined = taus.mean(0) if reduce == "mean" else taus.sum(0)
        torch.testing.assert_close(ta[key], glob[key] + lam * combined, rtol=1e-5, atol=1e-5)


def test_task_arithmetic_with_lam_zero_returns_the_global_model() -> None:
    glob = {"w": torch.tensor([1.0, -2.0, 3.0])}
    out = parse_method("task_arithmetic[lam=0]").aggregate(glob, clients(glob, [[5, 5, 5], [-1, 2, 0]]), ctx())
    assert torch.equal(out["w"], glob["w"])


def test_task_arithmetic_defaults_by_hand() -> None:
    # mean of taus [2, 0] and [4, -2] is [3, -1]; lam 0.4 -> global + [1.2, -0.4]; sum -> global + [2.4, -0.8]
    glob = {"w": torch.tensor([1.0, 1.0])}
    updates = clients(glob, [[2.0, 0.0], [4.0, -2.0]])
    torch.testing.assert_close(TaskArithmetic()(glob, updates, ctx())["w"], torch.tensor([2.2, 0.6]))
    torch.testing.assert_close(TaskArithmetic(reduce="sum")(glob, updates, ctx())["w"], torch.tensor([3.4, 0.2]))
