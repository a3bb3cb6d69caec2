"""Benchmark: the accountants considered for livar_bench/privacy/ on one published configuration.

TensorFlow Privacy's MNIST DP-SGD tutorial (tutorials/README.md, mnist_dpsgd_tutorial.py): Poisson
sampling at q = 256/60000, noise multiplier 1.12, 60 epochs of 234 steps, delta 1e-5; published epsilon
2.92 (RDP over the tutorial's orders, classic conversion). Prints each accountant's epsilon and time, and
one case only dp-accounting can analyse (sampling a fixed number of clients without replacement, what
``--participation`` draws).

    python benchmarks/privacy_accountants.py
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np


def main() -> None:
    logging.getLogger("absl").setLevel(logging.ERROR)  # orders it cannot evaluate, left out
    import dp_accounting as dpa
    from opacus.accountants import PRVAccountant, RDPAccountant

    q, sigma, steps, delta = 256 / 60000, 1.12, 60 * (60000 // 256), 1e-5
    orders = [1 + x / 10 for x in range(1, 100)] + list(range(12, 64))
    event = dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma))
    t = time.perf_counter()
    rdp = dpa.rdp.RdpAccountant(orders)
    rdp.compose(event, steps)
    eps = rdp.get_epsilon(delta)
    took = time.perf_counter() - t
    classic = float(np.min(np.asarray(rdp._rdp) - math.log(delta) / (np.asarray(orders) - 1)))
    print(f"dp-accounting RDP: eps={eps:.4f} (classic conversion {classic:.4f}; published 2.92) {took:.2f} s")
    t = time.perf_counter()
    pld = dpa.pld.PLDAccountant()
    pld.compose(event, steps)
    print(f"dp-accounting PLD: eps={pld.get_epsilon(delta):.4f} {time.perf_counter() - t:.2f} s")
    for name, accountant, kwargs in (("Opacus RDP", RDPAccountant(), {"alphas": orders}), ("Opacus PRV", PRVAccountant(), {})):
        t = time.perf_counter()
        accountant.history = [(sigma, q, steps)]
        print(f"{name}: eps={accountant.get_epsilon(delta, **kwargs):.4f} {time.perf_counter() - t:.2f} s")
    wor = dpa.rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
    wor.compose(dpa.SampledWithoutReplacementDpEvent(10, 5, dpa.GaussianDpEvent(0.5)), 5)
    print(f"dp-accounting RDP, 5 of 10 clients without replacement, z = 1 (0.5 of the replace-one sensitivity), "
          f"5 rounds: eps={wor.get_epsilon(delta):.3f} (Opacus: Poisson sampling only)")


if __name__ == "__main__":
    main()
