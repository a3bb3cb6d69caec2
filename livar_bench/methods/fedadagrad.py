"""FedAdagrad (Reddi et al., 2021, arXiv 2003.00295): Adagrad on the server's pseudo-gradient (fedopt.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from livar_bench.methods.fedopt import FedOpt


@dataclass(frozen=True)
class FedAdagrad(FedOpt):
    """v_t = v_{t-1} + delta_t^2 (``beta2`` is unused)."""

    prefix: ClassVar[str] = "fedadagrad"

    def second_moment(self, v: Tensor, d2: Tensor) -> Tensor:
        return v + d2
