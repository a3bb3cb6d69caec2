"""Client side: local training, LIVAR's path-integral signal and per-class feature statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from livar_bench.client.collectors.lora_signal import LoraSignal
from livar_bench.client.objectives import CrossEntropy
from livar_bench.client.signals import class_statistics
from livar_bench.client.train import LocalSettings, evaluate, local_train
from livar_bench.data.offline import make_synthetic
from livar_bench.data.transforms import DeviceTransform
from livar_bench.errors import DivergedError
from livar_bench.models import build_model
from livar_bench.types import Signal

# --- the LoRA path-integral collector ---------------------------------------------------------------


def _linear_sgd_run(target: float, steps: int = 2) -> dict[str, float]:
    """pred = w.x + b on one sample x = (1, 2), loss = (pred - target)^2 / 2, plain SGD lr 0.1."""
    w = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
    b = torch.nn.Parameter(torch.tensor(0.0))
    x = torch.tensor([1.0, 2.0])
    opt = torch.optim.SGD([w, b], lr=0.1)
    stacked = {"m.lora_A": w.unsqueeze(0), "m.lora_B": b.unsqueeze(0)}  # a client axis of 1
    collector = LoraSignal()
    state = collector.start(stacked)
    for _ in range(steps):
        loss = 0.5 * (w @ x + b - target) ** 2
        loss.backward()
        collector.before_step(state, stacked)
        opt.step()
        collector.after_step(state, stacked, {"m.lora_A": w.grad.unsqueeze(0), "m.lora_B": b.grad.unsqueeze(0)}, None)
        opt.zero_grad(set_to_none=True)
    return {k: float(v) for k, v in collector.payload(state, 0, None, {Signal.LORA_SIGNAL}).items()}


def test_path_integral_matches_hand_computation_with_sgd():
    # Residual r = pred - target, grads g_w = r * x, g_b = r; SGD moves theta by -0.1 g, so each step
    # adds |sum g * (theta_before - theta_after)| = 0.1 * sum g^2.
    # Step 1: w = (1, 0), b = 0 -> r = 1, g_w = (1, 2), g_b = 1 -> w: 0.1 * 5 = 0.5, b: 0.1.
    # Step 2: w = (0.9, -0.2), b = -0.1 -> r = 0.9 - 0.4 - 0.1 = 0.4, g_w = (0.4, 0.8), g_b = 0.4
    #         -> w: 0.1 * (0.16 + 0.64) = 0.08, b: 0.1 * 0.16 = 0.016.
    got = _linear_sgd_run(target=0.0)
    assert got["m.lora_A"] == pytest.approx(0.58, rel=1e-6)
    assert got["m.lora_B"] == pytest.approx(0.116, rel=1e-6)


def test_path_integral_stacked_clients_are_independent_and_masked():
    # Two clients stacked on a leading axis; client 1 is inactive in the second step (mask 0).
    params = {"m.lora_A": torch.zeros(2, 3)}
    collector = LoraSignal()
    state = collector.start(params)
    steps = [(torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]]), torch.tensor([[1.0], [1.0]])),
             (torch.tensor([[-1.0, 0.0, 1.0], [2.0, 2.0, 2.0]]), torch.tensor([[1.0], [0.0]]))]
    expected = torch.zeros(2)
    for move, mask in steps:
        grad = torch.tensor([[1.0, -1.0, 2.0], [4.0, 0.0, 1.0]])
        collector.before_step(state, params)
        params["m.lora_A"] -= move  # theta_before - theta_after = move
        collector.after_step(state, params, {"m.lora_A": grad}, mask)
        expected += (grad * move).sum(1).abs() * mask[:, 0]
    got = [float(collector.payload(state, j, None, {Signal.LORA_SIGNAL})["m.lora_A"]) for j in range(2)]
    # client 0: |1 - 2 + 6| + |-1 + 0 + 2| = 6; client 1: |2 + 0 + 0.5| = 2.5 (second step masked)
    assert got == pytest.approx([6.0, 2.5]) and got == pytest.approx(expected.tolist())


# --- class_statistics ------------------------------------------------------------------------------


def test_class_statistics_match_direct_numpy():
    rng = np.random.default_rng(0)
    num_classes, d = 5, 4
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1 + [4] * 5)  # class 3 absent, class 2 a single sample
    feats = rng.normal(size=(len(labels), d)) * (1 + labels[:, None])
    correct = rng.random(len(labels)) < 0.6
    correct[:3] = True  # class 0 keeps at least two correct samples
    stats = class_statistics(torch.from_numpy(feats).float(), torch.from_numpy(labels), torch.from_numpy(correct),
                             num_classes, with_cov=True)
    f32 = feats.astype(np.float32).astype(np.float64)  # the inputs the function saw
    for c in range(num_classes):
        rows = f32[labels == c]
        rows_ok = f32[(labels == c) & correct]
        assert int(stats.count[c]) == len(rows)
        assert int(stats.count_correct[c]) == len(rows_ok)
        mean = rows.mean(0) if len(rows) else np.zeros(d)
        np.testing.assert_allclose(stats.mean[c].numpy(), mean, rtol=1e-5, atol=1e-6)
        var = rows.var(0, ddof=1) if len(rows) >= 2 else np.zeros(d)
        np.testing.assert_allclose(stats.var[c].numpy(), var, rtol=1e-5, atol=1e-6)
        var_ok = rows_ok.var(0, ddof=1) if len(rows_ok) >= 2 else np.zeros(d)
        np.testing.assert_allclose(stats.var_correct[c].numpy(), var_ok, rtol=1e-5, atol=1e-6)
        cov = np.cov(rows, rowvar=False, ddof=1) if len(rows) >= 2 else np.zeros((d, d))
        np.testing.assert_allclose(stats.cov[c].numpy(), cov, rtol=1e-5, atol=1e-6)
    assert stats.count.dtype == torch.int64 and stats.var.dtype == torch.float32


def test_class_statistics_without_cov():
    stats = class_statistics(torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 1, 2]), torch.ones(6, dtype=torch.bool), 3)
    assert stats.cov is None
    assert torch.equal(stats.count, stats.count_correct)
    assert torch.allclose(stats.var, stats.var_correct)


# --- local training --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup():
    bundle = make_synthetic(num_classes=4, train_per_class=12, test_per_class=2)
    model, info = build_model("livar_micro_vit", bundle.num_classes, rank=2, alpha=2.0)
    tf = DeviceTransform(info.input_size, info.mean, info.std, scale=(0.6, 1.0), eval_crop=1.0)
    start = model.initial_params(torch.Generator().manual_seed(0))
    return model, tf, bundle.train, start


def _train(setup, seed=0, epochs=3, lr=1e-2, requires=()):
    model, tf, data, start = setup
    settings = LocalSettings(epochs=epochs, batch_size=16, lr=lr, weight_decay=0.0)
    return local_train(model, start, data, tf, CrossEntropy(), settings, torch.Generator().manual_seed(seed), 4,
                       requires, client_id=3)


def test_local_training_lowers_the_loss_and_reports_the_update(setup):
    model, tf, data, start = setup
    before = evaluate(model, start, data, tf, 256, None)["loss"]
    result = _train(setup)
    after = evaluate(model, result.update.params, data, tf, 256, None)["loss"]
    assert after < before - 0.05
    u = result.update
    assert u.client_id == 3 and u.num_samples == len(data) and result.images == 3 * len(data)
    assert torch.equal(u.class_counts, torch.bincount(data.labels, minlength=4))
    assert u.params.keys() == start.keys()
    assert u.lora_signals is None and u.class_stats is None  # FedAvg pays nothing for LIVAR's signals
    assert not torch.equal(u.params["head.weight"], start["head.weight"])
    assert torch.count_nonzero(start["blocks.0.attn.qkv.lora_B"]) == 0  # the start dict is not mutated


def test_local_training_is_deterministic_given_the_generator(setup):
    a = _train(setup, seed=1, epochs=1).update.params
    b = _train(setup, seed=1, epochs=1).update.params
    c = _train(setup, seed=2, epochs=1).update.params
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])


def test_requested_signals_are_collected(setup):
    model = setup[0]
    u = _train(setup, epochs=1, requires=(Signal.LORA_SIGNAL, Signal.CLASS_COV)).update
    lora_keys = {k for k in model.trainable if ".lora_" in k}
    assert set(u.lora_signals) == lora_keys
    values = torch.stack(list(u.lora_signals.values()))
    assert torch.isfinite(values).all() and (values >= 0).all() and (values > 0).any()
    assert u.class_stats is not None and u.class_stats.cov is not None
    assert torch.equal(u.class_stats.count, u.class_counts)


def test_non_finite_loss_raises_diverged_error(setup):
    with pytest.raises(DivergedError, match="client 3.*lower --lr"):
        _train(setup, epochs=1, lr=1e30)
