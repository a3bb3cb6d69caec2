"""FedAdam (Reddi et al., 2021, arXiv 2003.00295): Adam on the server's pseudo-gradient (see fedopt.py)."""

from __future__ import annotations

from torch import Tensor

from livar_bench.methods.describe import describe
from livar_bench.methods.fedopt import FedOpt


@describe("fedadam", paper="https://arxiv.org/abs/2003.00295", label="FedAdam", order=16, card="fedopt",
          summary="Adam server optimiser on the FedAvg pseudo-gradient (Reddi et al.).")
class FedAdam(FedOpt):
    """v_t = beta2 * v_{t-1} + (1 - beta2) * delta_t^2."""

    def second_moment(self, v: Tensor, d2: Tensor) -> Tensor:
        return self.beta2 * v + (1 - self.beta2) * d2
