"""SCAFFOLD's control-variate maths (Karimireddy et al., ICML 2020, arXiv 1910.06378, Algorithm 1).

With server model x, server control variate c and client control variates c_i:

    local step (K times):   y <- y - eta_l (g_i(y) - c_i + c)
    option II:              c_i+ = c_i - c + (x - y_i) / (K eta_l)
    server:                 x <- x + eta_g * mean_{i in S} (y_i - x)
                            c <- c + (|S| / N) * mean_{i in S} (c_i+ - c_i)

Option II reuses the local path: for plain SGD, (x - y_i) / (K eta_l) is the mean corrected gradient along
it, so c_i+ is the mean of the raw gradients g_i over the K steps (tests/ops/test_scaffold.py).
"""

from __future__ import annotations

from torch import Tensor


def option_ii(c_i: Tensor, c: Tensor, x: Tensor, y: Tensor, steps: int, lr: float) -> Tensor:
    """c_i+ = c_i - c + (x - y) / (steps * lr): the client's new control variate (float32 or wider)."""
    if steps <= 0 or not lr > 0:
        raise ValueError(f"option II needs steps > 0 and lr > 0, got steps={steps}, lr={lr}")
    return c_i - c + (x - y) / (steps * lr)


def server_control(c: Tensor, deltas: list[Tensor], weights: list[float], sampled: int, total: int) -> Tensor:
    """c + (|S| / N) * sum_i w_i (c_i+ - c_i), the weights w_i summing to 1 over the sampled clients."""
    if not 0 < sampled <= total:
        raise ValueError(f"sampled clients must be in 1..{total}, got {sampled}")
    step = sum(w * d for w, d in zip(weights, deltas, strict=True))
    return c + (sampled / total) * step
