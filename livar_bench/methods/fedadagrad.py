"""FedAdagrad (Reddi et al., 2021, arXiv 2003.00295): Adagrad on the server's pseudo-gradient (fedopt.py)."""

from __future__ import annotations

from torch import Tensor

from livar_bench.methods.describe import describe
from livar_bench.methods.fedopt import FedOpt


@describe("fedadagrad", paper="https://arxiv.org/abs/2003.00295", label="FedAdagrad", order=14, card="fedopt",
          summary="Adagrad server optimiser on the FedAvg pseudo-gradient (Reddi et al.).")
class FedAdagrad(FedOpt):
    """v_t = v_{t-1} + delta_t^2 (``beta2`` is unused)."""

    def second_moment(self, v: Tensor, d2: Tensor) -> Tensor:
        return v + d2
