"""SCAFFOLD (Karimireddy et al. 2020, arXiv 1910.06378, Algorithm 1, option II) against the paper's rule
written out here in float64, and its client step (g - c_i + c) in sequential and packed training."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from livar_bench.client.objectives import ControlCorrected, CrossEntropy
from livar_bench.client.phase import train_clients
from livar_bench.client.train import LocalSettings
from livar_bench.data.offline import make_synthetic
from livar_bench.data.transforms import DeviceTransform
from livar_bench.errors import BenchError
from livar_bench.federation.kernel import method_costs
from livar_bench.methods import parse_method
from livar_bench.models import build_model
from livar_bench.types import ClientUpdate
from tests.methods._fakes import context, make_updates

LR = 0.01  # the clients' learning rate of _fakes.context
N = 3  # clients of the federation in _fakes.context


def reference_round(x, c, cs, ys, steps, sizes, weights, eta, n_total):
    """The paper's option II and server update, by hand: every argument {key: float64 array} (cs and ys
    {client: {key: array}}). Returns (x+, c+, {client: c_i+})."""
    clients = sorted(ys)
    if weights == "uniform":
        w = {i: 1.0 / len(clients) for i in clients}
    else:
        w = {i: sizes[i] / sum(sizes[j] for j in clients) for i in clients}
    new_cs = {}
    for i in clients:
        old = cs.get(i, {k: np.zeros_like(v) for k, v in x.items()})
        new_cs[i] = {k: old[k] - c[k] + (x[k] - ys[i][k]) / (steps[i] * LR) for k in x}
    x_new = {k: x[k] + eta * sum(w[i] * (ys[i][k] - x[k]) for i in clients) for k in x}
    c_new = {}
    for k in x:
        change = sum(w[i] * (new_cs[i][k] - cs.get(i, {k: np.zeros_like(x[k])})[k]) for i in clients)
        c_new[k] = c[k] + len(clients) / n_total * change
    return x_new, c_new, new_cs


def _np(params):
    return {k: v.double().numpy() for k, v in params.items()}


def _close(got: torch.Tensor, want: np.ndarray) -> None:
    # float32 state against a float64 reference: values up to ~1e2 ((x - y) / (K lr)), so 1e-5 relative
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec,weights,eta", [("scaffold", "uniform", 1.0),
                                              ("scaffold[weights=samples,eta=0.5]", "samples", 0.5)])
def test_two_rounds_follow_the_paper(spec: str, weights: str, eta: float) -> None:
    method = parse_method(spec)
    params, updates = make_updates()
    steps = {u.client_id: u.num_steps for u in updates}
    sizes = {u.client_id: u.num_samples for u in updates}
    state = method.server_step(method.init_state(params), updates, context(round_=1))
    x0 = _np(params)
    zeros = {k: np.zeros_like(v) for k, v in x0.items()}
    x1, c1, cs1 = reference_round(x0, zeros, {}, {u.client_id: _np(u.params) for u in updates}, steps, sizes,
                                  weights, eta, N)
    for k in params:
        _close(state.params[k], x1[k])
        _close(state.buffers[f"scaffold.c.{k}"], c1[k])
        for i in cs1:
            _close(state.client_state[f"scaffold.c.{i}.{k}"], cs1[i][k])

    # round 2: clients 0 and 2 reply (client 1 dropped out), from the new global model, with new steps
    g = torch.Generator().manual_seed(7)
    second = [ClientUpdate(i, sizes[i], updates[i].class_counts,
                           {k: v + 0.2 * torch.randn(v.shape, generator=g) for k, v in state.params.items()},
                           num_steps=2 + i) for i in (0, 2)]
    after = method.server_step(state, second, context(round_=2))
    x2, c2, cs2 = reference_round(x1, c1, cs1, {u.client_id: _np(u.params) for u in second},
                                  {u.client_id: u.num_steps for u in second}, sizes, weights, eta, N)
    for k in params:
        _close(after.params[k], x2[k])
        _close(after.buffers[f"scaffold.c.{k}"], c2[k])
        for i in (0, 2):
            _close(after.client_state[f"scaffold.c.{i}.{k}"], cs2[i][k])
        _close(after.client_state[f"scaffold.c.1.{k}"], cs1[1][k])  # the dropped client keeps its c_i
    # what each client receives for its objective: c - c_i (c for a client never seen)
    for i in (0, 1, 2):
        inputs = method.client_inputs(after, i)
        for k in params:
            _close(inputs[k], c2[k] - (cs2[i][k] if i in cs2 else cs1[i][k]))
    unseen = method.client_inputs(after, 99)
    for k in params:
        _close(unseen[k], c2[k])


def test_state_lives_where_it_is_said() -> None:
    method = parse_method("scaffold")
    params, updates = make_updates()
    state = method.server_step(method.init_state(params), updates, context())
    assert set(state.buffers) == {f"scaffold.c.{k}" for k in params}
    assert set(state.client_state) == {f"scaffold.c.{u.client_id}.{k}" for u in updates for k in params}
    assert all(t.device.type == "cpu" for t in state.client_state.values())  # per-client state in host memory
    before = method.init_state(params)
    assert all(torch.equal(t, torch.zeros_like(t)) for t in method.client_inputs(before, 0).values())


def test_refuses_updates_without_steps_or_a_context_without_the_learning_rate() -> None:
    method = parse_method("scaffold")
    params, updates = make_updates()
    with pytest.raises(BenchError, match="learning rate"):
        method.server_step(method.init_state(params), updates, dataclasses.replace(context(), local_lr=None))
    stepless = [dataclasses.replace(u, num_steps=None) for u in updates]
    with pytest.raises(BenchError, match="local steps"):
        method.server_step(method.init_state(params), stepless, context())


def test_a_client_without_steps_keeps_its_control_variate() -> None:
    method = parse_method("scaffold")
    params, updates = make_updates()
    state = method.server_step(method.init_state(params), updates, context())
    idle = [dataclasses.replace(updates[0], params=dict(state.params), num_steps=0)]
    after = method.server_step(state, idle, context(round_=2))
    for k in params:
        assert torch.equal(after.client_state[f"scaffold.c.0.{k}"], state.client_state[f"scaffold.c.0.{k}"])


def test_the_corrected_loss_has_gradient_g_plus_c_minus_ci_and_reports_the_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    w = {"head.weight": torch.randn(3, 4, generator=g, requires_grad=True)}
    feats, targets = torch.randn(5, 4, generator=g), torch.tensor([0, 1, 2, 1, 0])
    correction = {"head.weight": torch.randn(3, 4, generator=g)}
    logits = feats @ w["head.weight"].T
    plain = CrossEntropy()(logits, targets, w, {})
    (grad,) = torch.autograd.grad(plain, w["head.weight"], retain_graph=True)
    corrected = ControlCorrected().with_inputs(correction)(logits, targets, w, {})
    (grad_c,) = torch.autograd.grad(corrected, w["head.weight"])
    assert corrected.item() == plain.item()  # the linear term's value is exactly zero
    torch.testing.assert_close(grad_c, grad + correction["head.weight"], rtol=0, atol=1e-7)


@pytest.fixture(scope="module")
def tiny():
    bundle = make_synthetic(train_per_class=8, test_per_class=1)
    model, info = build_model("livar_micro_vit", bundle.num_classes, rank=2, alpha=4.0, pretrained=False)
    tf = DeviceTransform(info.input_size, info.mean, info.std, scale=(0.6, 1.0))
    g = torch.Generator().manual_seed(1)
    start = model.initial_params(g)
    for k in start:
        if k.endswith(".lora_B"):
            start[k] = torch.randn(start[k].shape, generator=g) * 0.1
    perm = torch.randperm(len(bundle.train), generator=g)
    clients = {k: bundle.train.subset(perm[16 * k: 16 * k + n]) for k, n in enumerate((16, 11, 9))}
    corrections = {k: {key: 0.05 * torch.randn(t.shape, generator=g) for key, t in start.items()} for k in clients}
    return model, tf, start, clients, corrections, bundle.num_classes


def _train(tiny, objectives, pack):
    model, tf, start, clients, _, num_classes = tiny
    settings = LocalSettings(epochs=1, batch_size=4, lr=3e-3, weight_decay=0.0)
    return train_clients(model, start, clients, tf, CrossEntropy(), settings, seed=0, round_=2,
                         num_classes=num_classes, pack=pack, objectives=objectives)


def test_sequential_and_packed_clients_take_the_same_corrected_steps(tiny) -> None:
    corrections = tiny[4]
    objectives = {k: ControlCorrected().with_inputs(c) for k, c in corrections.items()}
    sequential, packed = _train(tiny, objectives, pack=1), _train(tiny, objectives, pack=3)
    plain = _train(tiny, None, pack=1)
    for k in corrections:
        for key, t in sequential[k].update.params.items():
            torch.testing.assert_close(packed[k].update.params[key], t, atol=1e-5, rtol=1e-5, msg=key)
        assert any(not torch.equal(sequential[k].update.params[key], plain[k].update.params[key])
                   for key in plain[k].update.params)  # the correction changes the client's path
    zero = {k: ControlCorrected().with_inputs({key: torch.zeros_like(t) for key, t in c.items()})
            for k, c in corrections.items()}
    at_zero = _train(tiny, zero, pack=1)  # round 1: c = c_i = 0, the clients of FedAvg exactly
    for k in corrections:
        for key, t in plain[k].update.params.items():
            assert torch.equal(at_zero[k].update.params[key], t), key


def test_costs_double_the_model_bytes_both_ways() -> None:
    params, updates = make_updates()
    scaffold, fedavg = parse_method("scaffold"), parse_method("fedavg")
    state = scaffold.init_state(params)
    ours, base = method_costs(scaffold, state, updates, 1), method_costs(fedavg, state, updates, 1)
    model_bytes = sum(t.numel() * t.element_size() for t in params.values())
    assert ours["download_bytes_per_client"] == base["download_bytes_per_client"] + model_bytes
    assert ours["upload_bytes_per_client"] == base["upload_bytes_per_client"] + model_bytes
    assert ours["upload_signal_bytes_per_client"] == base["upload_signal_bytes_per_client"] == 0
