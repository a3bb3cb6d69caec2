"""CCVR against its two sources, each rule written out here from its formulas.

Reference (fed-mammoth ``_models/ccvr.py``): per class a mixture of the clients' diagonal Gaussians
N(mu_kc, diag(var_kc) + 1e-8 I) with weights n_kc / sum_j n_jc over clients holding more than one
sample; per epoch fresh features, per-class counts from a multinomial of 256 x C uniform draws; SGD(0.01,
momentum 0.9) with CosineAnnealingLR(T_max=5) stepped per epoch, batches of 256 of the shuffled draw,
loss CE((z + 1e-12) / (||z|| + 1e-12) / 0.1). Paper: pooled Gaussian, once, after the last round, with
statistics under the global model.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from livar_bench.client.signals import class_statistics
from livar_bench.config import make_spec
from livar_bench.methods import CCVR, canonical_spec, parse_method
from livar_bench.ops.head import fit_linear_head
from livar_bench.types import ClientUpdate, RoundContext, Signal
from tests.methods._fakes import context, make_updates


def stats_from(features: torch.Tensor, labels: torch.Tensor, num_classes: int):
    return class_statistics(features, labels, torch.ones_like(labels, dtype=torch.bool), num_classes, with_cov=True)


def blob(g: torch.Generator, n: int, mean: list[float], std: float) -> torch.Tensor:
    return torch.tensor(mean) + std * torch.randn(n, len(mean), generator=g)


def ctx(round_: int = 1, rounds: int = 1, classes: int = 2, seed: int = 0, **kw) -> RoundContext:
    return RoundContext(round_, rounds, classes, 1.0, torch.Generator().manual_seed(seed), **kw)


# --- the head fit: schedule, momentum, batches, loss ---------------------------------------------

def reference_fit(w0, b0, epochs_data, perms, *, lr=0.01, momentum=0.9, batch=256, temperature=0.1):
    """SGD with momentum (buf = mu buf + g, p -= lr_e buf), lr_e = lr (1 + cos(pi e / E)) / 2."""
    w, b = w0.clone(), b0.clone()
    buf_w = buf_b = None
    epochs = len(epochs_data)
    for e, ((x, y), order) in enumerate(zip(epochs_data, perms, strict=True)):
        lr_e = lr * (1 + math.cos(math.pi * e / epochs)) / 2
        x, y = x[order], y[order]
        for start in range(0, len(y), batch):
            wv, bv = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
            z = x[start : start + batch] @ wv.T + bv
            norm = torch.sqrt((z * z).sum(1, keepdim=True))
            loss = torch.nn.functional.cross_entropy((z + 1e-12) / (norm + 1e-12) / temperature, y[start : start + batch])
            gw, gb = torch.autograd.grad(loss, [wv, bv])
            buf_w = gw if buf_w is None else momentum * buf_w + gw
            buf_b = gb if buf_b is None else momentum * buf_b + gb
            w, b = w - lr_e * buf_w, b - lr_e * buf_b
    return w, b


def test_head_fit_is_the_reference_schedule_with_fresh_draws_each_epoch() -> None:
    g = torch.Generator().manual_seed(0)
    draws = [(torch.randn(600, 5, generator=g), torch.randint(0, 3, (600,), generator=g)) for _ in range(5)]
    w0, b0 = torch.randn(3, 5, generator=g), torch.randn(3, generator=g)
    shuffle = torch.Generator().manual_seed(7)
    perms = [torch.randperm(600, generator=shuffle) for _ in range(5)]
    rest = iter(draws[1:])
    w, b = fit_linear_head(w0, b0, *draws[0], epochs=5, lr=0.01, momentum=0.9, batch_size=256,
                           generator=torch.Generator().manual_seed(7), temperature=0.1, schedule="cosine",
                           redraw=lambda: next(rest))
    ref_w, ref_b = reference_fit(w0, b0, draws, perms)
    torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b, ref_b, rtol=1e-5, atol=1e-6)


# --- the generative model -------------------------------------------------------------------------

def test_reference_sampler_is_the_client_mixture_without_single_sample_holders() -> None:
    g = torch.Generator().manual_seed(1)
    # class 0: clients 0 (30 samples at (0, 0)) and 1 (90 at (10, 0)); client 2 holds ONE class-0 sample
    # far away (1000, 1000): the reference leaves it out. Class 1: client 2 only, 40 samples at (0, 10).
    parts = [(blob(g, 30, [0.0, 0.0], 1.0), torch.zeros(30, dtype=torch.long)),
             (blob(g, 90, [10.0, 0.0], 2.0), torch.zeros(90, dtype=torch.long)),
             (torch.cat([blob(g, 1, [1000.0, 1000.0], 0.0), blob(g, 40, [0.0, 10.0], 0.5)]),
              torch.cat([torch.zeros(1, dtype=torch.long), torch.ones(40, dtype=torch.long)]))]
    stats = [stats_from(f, y, 2) for f, y in parts]
    per_class = 20_000
    x, y = CCVR(samples_per_class=per_class)._sampler(stats, 2, torch.Generator().manual_seed(2))()
    n = 2 * per_class
    assert len(y) == n  # multinomial of samples_per_class x C draws, every class held
    count0 = int((y == 0).sum())
    assert abs(count0 - n / 2) < 5 * math.sqrt(n / 4)  # Binomial(n, 1/2)
    assert x.abs().max() < 100  # nothing from the single-sample holder
    x0 = x[y == 0]
    # mixture weights 30/120 and 90/120 (client 2's single sample is not counted)
    weights = torch.tensor([30.0, 90.0]) / 120
    near_client1 = (x0[:, 0] > 5).float().mean()
    assert abs(float(near_client1) - 0.75) < 5 * math.sqrt(0.75 * 0.25 / len(x0))
    means = torch.stack([s.mean[0] for s in stats[:2]]).double()
    variances = torch.stack([s.var[0] for s in stats[:2]]).double() + 1e-8
    mix_mean = (weights.double()[:, None] * means).sum(0)
    mix_var = (weights.double()[:, None] * (variances + means**2)).sum(0) - mix_mean**2
    torch.testing.assert_close(x0.double().mean(0), mix_mean, atol=0.1, rtol=0)
    torch.testing.assert_close(x0.double().var(0), mix_var, atol=0.05 * float(mix_var.max()), rtol=0)
    x1 = x[y == 1].double()
    torch.testing.assert_close(x1.mean(0), stats[2].mean[1].double(), atol=0.02, rtol=0)
    torch.testing.assert_close(x1.var(0), stats[2].var[1].double() + 1e-8, atol=0.02, rtol=0)


def test_reference_counts_drop_the_draws_of_classes_nobody_holds() -> None:
    g = torch.Generator().manual_seed(3)
    stats = [stats_from(blob(g, 20, [0.0, 0.0], 1.0), torch.zeros(20, dtype=torch.long), 3)]
    _, y = CCVR(samples_per_class=1000)._sampler(stats, 3, torch.Generator().manual_seed(4))()
    assert set(y.tolist()) == {0}
    assert abs(len(y) - 1000) < 5 * math.sqrt(3000 * (1 / 3) * (2 / 3))  # Binomial(3000, 1/3)


def test_paper_sampler_draws_a_fixed_count_per_class_from_the_pooled_gaussian() -> None:
    g = torch.Generator().manual_seed(5)
    parts = [(blob(g, 50, [0.0, 0.0], 1.0), torch.zeros(50, dtype=torch.long)),
             (blob(g, 50, [4.0, 0.0], 1.0), torch.zeros(50, dtype=torch.long))]
    stats = [stats_from(f, y, 2) for f, y in parts]
    union = torch.cat([f for f, _ in parts]).double()
    x, y = CCVR(preset="paper", samples_per_class=20_000)._sampler(stats, 2, torch.Generator().manual_seed(6))()
    assert y.tolist() == [0] * 20_000  # class 1 held by nobody
    torch.testing.assert_close(x.double().mean(0), union.mean(0), atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(x.double().T), torch.cov(union.T), atol=0.1, rtol=0)


# --- when, features, presets and ids --------------------------------------------------------------

def two_class_round(g: torch.Generator) -> tuple[dict, list[ClientUpdate]]:
    updates = []
    for k, centre in enumerate(([3.0, 0.0], [0.0, 3.0])):
        f, y = blob(g, 40, centre, 0.5), torch.full((40,), k, dtype=torch.long)
        updates.append(ClientUpdate(k, 40, torch.bincount(y, minlength=2), {}, signals={"class_stats": stats_from(f, y, 2)}))
    glob = {"head.weight": torch.zeros(2, 2), "head.bias": torch.tensor([1.0, 0.0])}
    return glob, updates


def test_when_final_calibrates_only_at_the_last_round() -> None:
    glob, updates = two_class_round(torch.Generator().manual_seed(8))
    stage = CCVR(when="final")
    assert torch.equal(stage(glob, updates, ctx(1, 3))["head.weight"], glob["head.weight"])
    assert not torch.equal(stage(glob, updates, ctx(3, 3))["head.weight"], glob["head.weight"])
    assert not torch.equal(CCVR()(glob, updates, ctx(1, 3))["head.weight"], glob["head.weight"])


def test_features_global_uses_the_pass_over_the_global_model() -> None:
    g = torch.Generator().manual_seed(9)
    glob, updates = two_class_round(g)
    bare = [ClientUpdate(u.client_id, u.num_samples, u.class_counts, {}) for u in updates]  # no local stats
    seen = []

    def extra_round(request):
        seen.append(request.signals)
        assert request.params is glob  # the aggregated global model
        return [ClientUpdate(u.client_id, u.num_samples, u.class_counts, {}, signals=u.signals) for u in updates]

    stage = CCVR(preset="paper", lr=0.5)  # a larger step: 10 steps of plain cross-entropy from a biased head
    out = stage(glob, bare, ctx(2, 2, extra_round=extra_round))
    assert seen == [{Signal.CLASS_COV}]  # pooled full covariance asks for covariances
    x = torch.cat([blob(g, 100, [3.0, 0.0], 0.5), blob(g, 100, [0.0, 3.0], 0.5)])
    y = torch.cat([torch.zeros(100), torch.ones(100)]).long()
    assert ((x @ out["head.weight"].T + out["head.bias"]).argmax(1) == y).float().mean() > 0.95
    assert stage(glob, bare, ctx(1, 2, extra_round=extra_round)) == glob and len(seen) == 1
    with pytest.raises(ValueError, match="global"):
        stage(glob, bare, ctx(2, 2))


def test_presets_resolve_and_canonicalise() -> None:
    ref, paper = CCVR(), CCVR(preset="paper")
    assert (ref.model, ref.schedule, ref.batch_size, ref.resample_per_epoch, ref.when, ref.features) == (
        "client_diag", "cosine", 256, True, "every_round", "local")
    assert (paper.model, paper.when, paper.features, paper.logit_norm, paper.counts) == (
        "pooled_full", "final", "global", False, "fixed")
    assert canonical_spec("ccvr[preset=reference]") == canonical_spec("ccvr") == canonical_spec("ccvr[batch_size=256]")
    assert canonical_spec("ccvr[preset=paper,model=pooled_full]") == canonical_spec("ccvr[preset=paper]")
    assert canonical_spec("ccvr[preset=paper,model=client_diag]") != canonical_spec("ccvr[preset=paper]")
    assert canonical_spec("ccvr[model=pooled_full]") != canonical_spec("ccvr")
    ids = {make_spec({"method": m}).run_id for m in ("ccvr", "ccvr[preset=paper]", "ccvr[schedule=const]")}
    assert len(ids) == 3
    assert parse_method("ccvr[preset=paper,when=every_round]").stages[0].when == "every_round"



def test_the_extra_round_runs_with_the_new_base_corrections() -> None:
    """Issue 24, fixed in ``ccvr.extra_round_base_deltas``: in a server step the extra round gets the new
    global factors with the round's new base corrections (the evaluated model), not those from before."""
    params, updates = make_updates()
    plain = parse_method("fedex_lora")
    before = plain.server_step(plain.init_state(params), updates, context())  # a state with corrections
    requests = []

    def extra_round(request):
        requests.append(request)
        return [ClientUpdate(u.client_id, u.num_samples, u.class_counts, {}, signals=u.signals) for u in updates]

    method = parse_method("fedex_lora+ccvr[features=global]")
    after = method.server_step(before, updates, dataclasses.replace(context(round_=2), extra_round=extra_round))
    (request,) = requests
    assert request.signals == {Signal.CLASS_STATS}
    assert all(torch.equal(request.params[k], after.params[k]) for k in params if not k.startswith("head."))
    assert list(request.base_deltas) == list(after.base_deltas)
    assert all(torch.equal(request.base_deltas[m], after.base_deltas[m]) for m in after.base_deltas)
    assert any(not torch.equal(after.base_deltas[m], before.base_deltas[m]) for m in before.base_deltas)
