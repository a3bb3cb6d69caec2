"""FedAdam (Reddi et al., 2021, arXiv 2003.00295): Adam on the server's pseudo-gradient (see fedopt.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from livar_bench.methods.fedopt import FedOpt


@dataclass(frozen=True)
class FedAdam(FedOpt):
    """v_t = beta2 * v_{t-1} + (1 - beta2) * delta_t^2."""

    prefix: ClassVar[str] = "fedadam"

    def second_moment(self, v: Tensor, d2: Tensor) -> Tensor:
        return self.beta2 * v + (1 - self.beta2) * d2
