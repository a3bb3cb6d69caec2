"""The SVD and statistics merges against FusionBench's implementations (``pip install fusion-bench``),
where FusionBench implements the same rule. Skipped when fusion-bench is not installed.

Tolerances: float64 on both sides, rtol 1e-9 (TSV-M, Iso-C, KnOTS, Fisher); RegMean 1e-8 at alpha 1 and 1e-6 below
(FusionBench builds its off-diagonal mask in float32). Inputs are full-rank task matrices, where our support
restriction keeps everything (on rank-deficient ones the two differ by design: ops/svd_merge.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

fb_tsv = pytest.importorskip("fusion_bench.method.task_singular_vector.utils.TSVM_utils")
fb_iso = pytest.importorskip("fusion_bench.method.isotropic_merging.iso_utils")
fb_knots = pytest.importorskip("fusion_bench.method.knots.knots_utils")
fb_regmean = pytest.importorskip("fusion_bench.method.regmean.regmean")
fb_fisher = pytest.importorskip("fusion_bench.method.fisher_merging.fisher_merging")

from livar_bench.ops.regmean import fisher_merge, regmean  # noqa: E402
from livar_bench.ops.svd_merge import iso_c, knots_align, tsv_merge  # noqa: E402

RTOL = 1e-9


def tasks(seed: int, k: int, out: int = 7, inp: int = 6) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(k, out, inp)))


@pytest.mark.parametrize(("seed", "k"), [(0, 1), (1, 2), (2, 3), (3, 5)])
def test_tsv_m_matches_fusionbench(seed: int, k: int) -> None:
    taus = tasks(seed, k)
    theirs = fb_tsv.compute_and_sum_svd_mem_reduction([{"w": t.clone()} for t in taus], accelerator="cpu")["w"]
    torch.testing.assert_close(tsv_merge(taus), theirs, rtol=RTOL, atol=1e-10)


@pytest.mark.parametrize(("seed", "k"), [(0, 1), (1, 3)])
def test_iso_c_matches_fusionbench(seed: int, k: int) -> None:
    taus = tasks(seed, k)
    theirs = fb_iso.iso_c([{"w": t.clone()} for t in taus], accelerator="cpu")["w"]  # on the sum
    torch.testing.assert_close(iso_c(taus.sum(0)), theirs, rtol=RTOL, atol=1e-10)


def test_knots_alignment_matches_fusionbench() -> None:
    taus = tasks(4, 3, out=5, inp=4)
    u, coeffs = knots_align(taus, eps=1e-4)
    fu, fs, fvhs = fb_knots.subspace_alignment([t.clone() for t in taus], eps=1e-4)
    torch.testing.assert_close(u, fu, rtol=RTOL, atol=1e-10)
    for i in range(3):
        torch.testing.assert_close(coeffs[i], fs[:, None] * fvhs[i], rtol=RTOL, atol=1e-10)


@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_regmean_matches_fusionbench(alpha: float) -> None:
    rng = np.random.default_rng(5)
    ws = [torch.from_numpy(rng.normal(size=(3, 4))) for _ in range(3)]
    xs = [torch.from_numpy(rng.normal(size=(12, 4))) for _ in range(3)]
    grams = [x.T @ x for x in xs]
    theirs = fb_regmean.merging_with_regmean_weights({"m.weight": ws}, [{"m": g} for g in grams],
                                                     reduce_non_diagonal_ratio=alpha)["m.weight"]
    # FusionBench builds its off-diagonal mask in float32 (1 - 0.6 = 0.39999998), hence 1e-6 below alpha 1
    tol = 1e-8 if alpha == 1.0 else 1e-6
    torch.testing.assert_close(regmean(torch.stack(ws), torch.stack(grams), alpha), theirs, rtol=tol, atol=tol)


def test_fisher_merging_matches_fusionbench_without_its_normalisation() -> None:
    rng = np.random.default_rng(6)
    params = [torch.from_numpy(rng.normal(size=(2, 3))) for _ in range(3)]
    fishers = [torch.from_numpy(rng.random(size=(2, 3))) for _ in range(3)]
    lam = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    theirs = fb_fisher.merging_with_fisher_weights({"p": params}, [{"p": f} for f in fishers], lam,
                                                   normalize_fisher_weight=False, minimal_fisher_weight=1e-6)["p"]
    torch.testing.assert_close(fisher_merge(torch.stack(params), torch.stack(fishers), lam, floor=1e-6), theirs,
                               rtol=RTOL, atol=1e-12)
