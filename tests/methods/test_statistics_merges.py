"""RegMean and Fisher merging end to end: the two new client collectors (input Gram matrices, diagonal
Fisher) against independent computations on the tiny ViT, their bytes in the cost columns, and one round
of each method against numpy.

Tolerances: collector statistics 1e-5 relative (float32 forward passes); merges 1e-5 on products (float64
solve, float32 factors) and 1e-6 on factor-space entries.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from livar_bench.client.objectives import CrossEntropy
from livar_bench.client.signals import diagonal_fisher, input_grams
from livar_bench.client.train import LocalSettings, local_train
from livar_bench.config import make_spec
from livar_bench.data.offline import make_synthetic
from livar_bench.data.transforms import DeviceTransform
from livar_bench.federation import run_federation
from livar_bench.methods import parse_method
from livar_bench.models import build_model
from livar_bench.types import Signal
from tests.methods._fakes import MODULES, RANK, context, make_updates

SCALE = 2.0


@pytest.fixture(scope="module")
def tiny():
    bundle = make_synthetic(num_classes=4, train_per_class=6, test_per_class=2)
    model, info = build_model("livar_micro_vit", bundle.num_classes, rank=2, alpha=2.0)
    tf = DeviceTransform(info.input_size, info.mean, info.std, scale=(0.6, 1.0), eval_crop=1.0)
    params = model.initial_params(torch.Generator().manual_seed(0))
    params = {k: v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) for k, v in params.items()}
    model.load_params(params)
    return model, tf, bundle.train


def test_input_grams_match_the_layers_inputs(tiny) -> None:
    """X^T X from inputs recorded by a plain forward hook and multiplied in numpy."""
    model, tf, data = tiny
    recorded: dict[str, list[np.ndarray]] = {}
    paths = [k[: -len(".lora_A")] for k in model.trainable if k.endswith(".lora_A")]

    def keep(path):
        return lambda module, args, out: recorded.setdefault(path, []).append(
            args[0].detach().reshape(-1, args[0].shape[-1]).double().numpy())

    handles = [model.net.get_submodule(p).register_forward_hook(keep(p)) for p in paths]
    handles.append(model.net.head.register_forward_hook(keep("head")))
    with torch.no_grad():
        model.eval()
        model.classify(model.features(tf.eval(data.images)))
    for h in handles:
        h.remove()
    got = input_grams(model, data.images, tf, batch_size=5, dtype=None)  # batches of 5: sums over batches
    assert set(got) == set(paths) | {"head"}
    for path, chunks in recorded.items():
        x = np.concatenate(chunks)
        np.testing.assert_allclose(got[path].double().numpy(), x.T @ x, rtol=1e-5, atol=1e-4)
    assert got["head"].shape == (model.feature_dim, model.feature_dim)


def test_diagonal_fisher_of_the_head_is_the_analytic_one(tiny) -> None:
    """For the head, d log p_y / d b_c = [c = y] - p_c and d/dW_c = ([c = y] - p_c) f: the Fisher of the
    bias and weight follow from the logits and the same label draws (a replayed generator)."""
    model, tf, data = tiny
    gen = torch.Generator().manual_seed(7)
    replay = torch.Generator().manual_seed(7)
    got = diagonal_fisher(model, data.images, tf, num_examples=10, generator=gen, dtype=None)
    chosen = torch.randperm(len(data), generator=replay)[:10]
    with torch.no_grad():
        feats = model.features(tf.eval(data.images[chosen]))
        probs = torch.softmax(model.classify(feats).float(), -1)
    labels = torch.multinomial(probs, 1, generator=replay)[:, 0]  # one draw per image, as the collector
    fb = np.zeros(4)
    fw = np.zeros((4, model.feature_dim))
    for f, p, y in zip(feats.double().numpy(), probs.double().numpy(), labels.tolist(), strict=True):
        delta = np.eye(4)[y] - p
        fb += delta**2
        fw += (delta[:, None] * f[None, :]) ** 2
    np.testing.assert_allclose(got["head.bias"].double().numpy(), fb / 10, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["head.weight"].double().numpy(), fw / 10, rtol=1e-4, atol=1e-7)
    assert set(got) == set(model.trainable) and all(bool((v >= 0).all()) for v in got.values())
    assert any(float(got[k].sum()) > 0 for k in got if ".lora_" in k)
    # the LoRA factors' Fisher against per-example backward passes with the same images and labels
    loop = {k: torch.zeros_like(v) for k, v in model.trainable.items()}
    for i, y in zip(chosen.tolist(), labels.tolist(), strict=True):
        log_p = torch.log_softmax(model.classify(model.features(tf.eval(data.images[i : i + 1]))).float(), -1)[0]
        for k, g in zip(loop, torch.autograd.grad(log_p[y], list(model.trainable.values())), strict=True):
            loop[k] += g.square() / 10
    for k in loop:
        torch.testing.assert_close(got[k], loop[k], rtol=1e-4, atol=1e-8)


def test_local_training_sends_the_statistics_when_asked(tiny) -> None:
    model, tf, data = tiny
    start = model.initial_params(torch.Generator().manual_seed(0))
    settings = LocalSettings(epochs=1, batch_size=8, lr=1e-2, weight_decay=0.0)
    run = lambda req, seed=0: local_train(model, start, data, tf, CrossEntropy(), settings,  # noqa: E731
                                          torch.Generator().manual_seed(seed), 4, req).update
    plain, both = run(()), run((Signal.INPUT_GRAM, Signal.FISHER))
    assert not plain.signals and set(both.signals) == {"input_gram", "fisher"}
    assert all(torch.equal(plain.params[k], both.params[k]) for k in plain.params)  # reading never changes training
    again = run((Signal.INPUT_GRAM, Signal.FISHER))
    assert all(torch.equal(both.signals["fisher"][k], again.signals["fisher"][k]) for k in again.signals["fisher"])


def test_statistics_are_counted_in_the_upload(tmp_path, tiny_spec_values) -> None:
    rows = {}
    for name in ("fedavg", "regmean", "fisher_merging"):
        spec = make_spec({**tiny_spec_values, "method": name, "rounds": 1})
        frame = pd.read_csv(run_federation(spec, tmp_path).run_dir / "metrics.csv")
        cost = frame[frame["split"] == "cost"].set_index("metric")["value"]
        rows[name] = cost
    from livar_bench.federation import setup_run

    model = setup_run(make_spec({**tiny_spec_values, "method": "fedavg"})).model
    params_bytes = sum(p.numel() * 4 for p in model.trainable.values())
    dims = [model.net.get_submodule(k[: -len(".lora_A")]).base_layer.in_features for k in model.trainable
            if k.endswith(".lora_A")] + [model.feature_dim]
    assert rows["fedavg"]["upload_signal_bytes_per_client"] == 0
    assert rows["regmean"]["upload_signal_bytes_per_client"] == sum(4 * d * d for d in dims)
    assert rows["fisher_merging"]["upload_signal_bytes_per_client"] == params_bytes
    assert rows["fisher_merging"]["upload_bytes_per_client"] == rows["fedavg"]["upload_bytes_per_client"] + params_bytes


def np_(t):
    return t.double().numpy()


def best_rank(m, r):
    u, s, vh = np.linalg.svd(m, full_matrices=False)
    return (u[:, :r] * s[:r]) @ vh[:r]


@pytest.mark.parametrize("alpha", [1.0, 0.6, 0.0])
def test_regmean_one_round_against_numpy(alpha: float) -> None:
    params, updates = make_updates()
    out = parse_method(f"regmean[alpha={alpha}]").aggregate(params, updates, context(lora_scale=SCALE))

    def shrink(g):
        g = np_(g)
        return alpha * g + (1 - alpha) * np.diag(np.diag(g))

    for m in MODULES:
        deltas = [SCALE * np_(u.params[f"{m}.lora_B"]) @ np_(u.params[f"{m}.lora_A"]) for u in updates]
        gs = [shrink(u.signals["input_gram"][m]) for u in updates]
        merged = np.linalg.solve(sum(gs), sum(g @ d.T for g, d in zip(gs, deltas, strict=True))).T
        np.testing.assert_allclose(SCALE * np_(out[f"{m}.lora_B"]) @ np_(out[f"{m}.lora_A"]), best_rank(merged, RANK),
                                   rtol=1e-5, atol=1e-5)
    gs = [shrink(u.signals["input_gram"]["head"]) for u in updates]
    head = np.linalg.solve(sum(gs), sum(g @ np_(u.params["head.weight"]).T for g, u in zip(gs, updates, strict=True))).T
    np.testing.assert_allclose(np_(out["head.weight"]), head, rtol=1e-5, atol=1e-5)
    n = np.array([u.num_samples for u in updates], float)
    np.testing.assert_allclose(np_(out["head.bias"]), sum(w * np_(u.params["head.bias"])
                                                          for w, u in zip(n / n.sum(), updates, strict=True)), rtol=1e-6)


def test_regmean_with_singular_grams_gives_a_finite_merge() -> None:
    """Gram matrices from one input token each (rank 1 in 5 dimensions): singular, regularised by alpha."""
    params, updates = make_updates()
    thin = []
    for k, u in enumerate(updates):
        x = torch.randn(1, 5, generator=torch.Generator().manual_seed(k))
        grams = {**u.signals["input_gram"], **{m: x.T @ x for m in MODULES}}
        thin.append(dataclasses.replace(u, signals={**u.signals, "input_gram": grams}))
    for alpha in (0.6, 1.0):  # alpha = 1: the summed Gram has rank 3 < 5, the minimum-norm solution
        out = parse_method(f"regmean[alpha={alpha}]").aggregate(params, thin, context(lora_scale=SCALE))
        assert all(bool(torch.isfinite(v).all()) for v in out.values())


def test_fisher_merging_one_round_against_numpy() -> None:
    params, updates = make_updates()
    out = parse_method("fisher_merging").aggregate(params, updates, context())
    n = np.array([u.num_samples for u in updates], float)
    for key in params:
        f = np.stack([np_(u.signals["fisher"][key]) + 1e-6 for u in updates])
        p = np.stack([np_(u.params[key]) for u in updates])
        want = (n.reshape(-1, *[1] * (p.ndim - 1)) * f * p).sum(0) / (n.reshape(-1, *[1] * (p.ndim - 1)) * f).sum(0)
        np.testing.assert_allclose(np_(out[key]), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["regmean", "fisher_merging"])
def test_one_client_keeps_its_model(name: str) -> None:
    params, updates = make_updates()
    out = parse_method(name).aggregate(params, updates[:1], context(lora_scale=SCALE))
    for m in MODULES:
        np.testing.assert_allclose(np_(out[f"{m}.lora_B"]) @ np_(out[f"{m}.lora_A"]),
                                   np_(updates[0].params[f"{m}.lora_B"]) @ np_(updates[0].params[f"{m}.lora_A"]),
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np_(out["head.weight"]), np_(updates[0].params["head.weight"]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["regmean", "fisher_merging"])
def test_missing_statistics_are_a_clear_error(name: str) -> None:
    params, updates = make_updates()
    bare = [dataclasses.replace(u, signals={}) for u in updates]
    with pytest.raises(ValueError, match="needs every client's"):
        parse_method(name).aggregate(params, bare, context())
