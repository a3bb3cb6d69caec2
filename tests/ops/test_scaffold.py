"""SCAFFOLD's option II and server update: hand cases and the paper's reading of option II on SGD."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from livar_bench.ops.scaffold import option_ii, server_control


def test_option_ii_by_hand() -> None:
    # c_i = 1, c = 3, x = 10, y = 4 after K = 2 steps of lr 0.5: 1 - 3 + 6 / 1 = 4
    got = option_ii(torch.tensor(1.0), torch.tensor(3.0), torch.tensor(10.0), torch.tensor(4.0), 2, 0.5)
    assert float(got) == 4.0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 8), lr=st.sampled_from([0.01, 0.1, 0.3]))
def test_option_ii_is_the_mean_gradient_of_the_sgd_path(seed, steps, lr) -> None:
    """Corrected SGD on a quadratic f(y) = 1/2 y^T H y - b^T y: c_i+ equals the mean of grad f over the path."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(4, 4, generator=g, dtype=torch.float64)
    h, b = m @ m.T / 4 + torch.eye(4, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    x = torch.randn(4, generator=g, dtype=torch.float64)
    c, c_i = torch.randn(4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    y, grads = x.clone(), []
    for _ in range(steps):
        grad = h @ y - b
        grads.append(grad)
        y = y - lr * (grad - c_i + c)
    torch.testing.assert_close(option_ii(c_i, c, x, y, steps, lr), torch.stack(grads).mean(0))


def test_server_control_by_hand_and_bounds() -> None:
    c = torch.tensor([1.0, 0.0])
    deltas = [torch.tensor([2.0, 2.0]), torch.tensor([4.0, 0.0])]
    # 2 of 4 clients sampled, equal weights: c + 1/2 * [3, 1]
    torch.testing.assert_close(server_control(c, deltas, [0.5, 0.5], 2, 4), torch.tensor([2.5, 0.5]))
    with pytest.raises(ValueError):
        server_control(c, deltas, [0.5, 0.5], 5, 4)
    with pytest.raises(ValueError):
        option_ii(c, c, c, c, 0, 0.1)
