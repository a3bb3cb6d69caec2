"""TIES against the LIVAR reference code's rule (fed-mammoth ``_models/ties_merging.py``) and PEFT's count.

The reference rule is written out here with numpy from its formulas: every client's update over all
trainable tensors is one vector; entries with |tau| below ``np.quantile(|tau|, 0.7)`` are zeroed; the
elected sign is that of the sum (entries with a zero sum get nothing); the merged entry is the mean of
the clients' kept values with that sign; the new model is global + 0.4 * merged.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from livar_bench.methods import parse_method
from livar_bench.ops.ties import trim_mask
from livar_bench.types import ClientUpdate, RoundContext


def reference_ties(start: np.ndarray, clients: list[np.ndarray], density: float = 0.3, lam: float = 0.4) -> np.ndarray:
    taus = [c - start for c in clients]
    for t in taus:
        t[np.abs(t) < np.quantile(np.abs(t), 1 - density)] = 0
    total = sum(taus)
    positive, negative = total > 0, total < 0
    final = np.zeros_like(start)
    count = np.zeros_like(start)
    for t in taus:
        pos = np.clip(t, 0, None) * positive
        neg = np.clip(t, None, 0) * negative
        final += pos + neg
        count += (pos > 0).astype(start.dtype) + (neg < 0).astype(start.dtype)
    final[count > 0] /= count[count > 0]
    return start + lam * final


def flat(params: dict[str, torch.Tensor]) -> np.ndarray:
    return torch.cat([v.reshape(-1) for v in params.values()]).numpy().copy()


def ctx() -> RoundContext:
    return RoundContext(1, 1, 3, 1.0, torch.Generator().manual_seed(0))


def make_round(seed: int, num_clients: int, scales: tuple[float, float, float]) -> tuple[dict, list[ClientUpdate]]:
    """LoRA-like tensors whose updates have very different scales (B small, A middle, head large)."""
    g = torch.Generator().manual_seed(seed)
    glob = {"blk.lora_A": torch.randn(2, 6, generator=g), "blk.lora_B": torch.zeros(5, 2),
            "head.weight": torch.randn(3, 4, generator=g), "head.bias": torch.zeros(3)}
    scale = {"blk.lora_A": scales[0], "blk.lora_B": scales[1], "head.weight": scales[2], "head.bias": scales[2]}
    updates = [ClientUpdate(k, 10 + k, torch.zeros(3),
                            {key: v + scale[key] * torch.randn(v.shape, generator=g) for key, v in glob.items()})
               for k in range(num_clients)]
    return glob, updates


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), num_clients=st.integers(1, 6),
       scales=st.tuples(st.sampled_from([1e-3, 0.1, 1.0]), st.sampled_from([1e-4, 1e-2, 1.0]), st.sampled_from([0.1, 1.0, 10.0])))
def test_default_ties_is_the_reference_rule(seed: int, num_clients: int, scales: tuple[float, float, float]) -> None:
    glob, updates = make_round(seed, num_clients, scales)
    ours = parse_method("ties").aggregate(glob, updates, ctx())
    expected = reference_ties(flat(glob), [flat(u.params) for u in updates])
    np.testing.assert_allclose(flat(ours), expected, rtol=1e-6, atol=1e-6)


def test_global_and_tensor_trim_keep_different_entries_when_scales_differ() -> None:
    # B updates 1000x smaller than the head's: one threshold per client keeps almost none of B
    glob, updates = make_round(3, 4, (0.1, 1e-3, 1.0))
    merged_global = parse_method("ties[trim=global]").aggregate(glob, updates, ctx())
    merged_tensor = parse_method("ties[trim=tensor]").aggregate(glob, updates, ctx())
    assert torch.equal(merged_global["blk.lora_B"], glob["blk.lora_B"])  # every B entry trimmed
    assert not torch.equal(merged_tensor["blk.lora_B"], glob["blk.lora_B"])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 200), density=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_per_tensor_trim_keeps_pefts_floor_count(n: int, density: float, seed: int) -> None:
    taus = torch.randn(3, n, generator=torch.Generator().manual_seed(seed))  # distinct magnitudes
    kept = trim_mask(taus, density)
    assert kept.sum(1).tolist() == [n if density >= 1 else int(density * n)] * 3  # PEFT: k = int(density * numel)
    # and the kept entries are the largest ones
    for row, mask in zip(taus.abs(), kept, strict=True):
        if 0 < mask.sum() < n:
            assert row[mask].min() > row[~mask].max()


def test_per_tensor_trim_by_hand_floor_not_round() -> None:
    # 0.3 x 5 = 1.5: PEFT's floor keeps 1 entry (round would keep 2)
    taus = torch.tensor([[5.0, -4.0, 3.0, 2.0, 1.0]])
    assert trim_mask(taus, 0.3).tolist() == [[True, False, False, False, False]]


def test_task_arithmetic_ids_and_path_unchanged_by_the_trim_option() -> None:
    glob, updates = make_round(1, 3, (0.1, 0.1, 0.1))
    ta = parse_method("task_arithmetic").aggregate(glob, updates, ctx())
    for key in glob:
        taus = torch.stack([u.params[key] - glob[key] for u in updates])
        torch.testing.assert_close(ta[key], glob[key] + 0.4 * taus.mean(0))
