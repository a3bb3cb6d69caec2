"""FedYogi (Reddi et al., 2021, arXiv 2003.00295): Yogi on the server's pseudo-gradient (see fedopt.py)."""

from __future__ import annotations

from torch import Tensor

from livar_bench.methods.describe import describe
from livar_bench.methods.fedopt import FedOpt


@describe("fedyogi", paper="https://arxiv.org/abs/2003.00295", label="FedYogi", order=18, card="fedopt",
          summary="Yogi server optimiser on the FedAvg pseudo-gradient (Reddi et al.).")
class FedYogi(FedOpt):
    """v_t = v_{t-1} - (1 - beta2) * delta_t^2 * sign(v_{t-1} - delta_t^2): v grows at most additively."""

    def second_moment(self, v: Tensor, d2: Tensor) -> Tensor:
        return v - (1 - self.beta2) * d2 * (v - d2).sign()
