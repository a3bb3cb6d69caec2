"""FedYogi (Reddi et al., 2021, arXiv 2003.00295): Yogi on the server's pseudo-gradient (see fedopt.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from livar_bench.methods.fedopt import FedOpt


@dataclass(frozen=True)
class FedYogi(FedOpt):
    """v_t = v_{t-1} - (1 - beta2) * delta_t^2 * sign(v_{t-1} - delta_t^2): v grows at most additively."""

    prefix: ClassVar[str] = "fedyogi"

    def second_moment(self, v: Tensor, d2: Tensor) -> Tensor:
        return v - (1 - self.beta2) * d2 * (v - d2).sign()
