"""RoLoRA (Chen et al. 2025, arXiv 2502.01755): which factor moves in which round (through the real client
phase), the exact average of the trained factor (written out here), and the halved upload."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from livar_bench.client.phase import train_clients
from livar_bench.client.train import LocalSettings
from livar_bench.data.offline import make_synthetic
from livar_bench.data.transforms import DeviceTransform
from livar_bench.federation.kernel import method_costs
from livar_bench.methods import parse_method
from livar_bench.models import build_model
from livar_bench.types import ClientUpdate
from tests.methods._fakes import context, make_updates


def _kind(key: str) -> str:
    return "A" if key.endswith(".lora_A") else "B" if key.endswith(".lora_B") else "head"


@pytest.mark.parametrize("pack", [1, 3])
def test_odd_rounds_move_b_even_rounds_move_a(pack: int) -> None:
    """Four rounds of the real client phase and server step: B (and the head) change in rounds 1 and 3,
    A (and the head) in rounds 2 and 4; clients leave the frozen factor bit for bit as they got it."""
    bundle = make_synthetic(train_per_class=8, test_per_class=1)
    model, info = build_model("livar_micro_vit", bundle.num_classes, rank=2, alpha=4.0, pretrained=False)
    tf = DeviceTransform(info.input_size, info.mean, info.std, scale=(0.6, 1.0))
    perm = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(0))
    clients = {k: bundle.train.subset(perm[20 * k: 20 * k + 20]) for k in range(3)}
    method = parse_method("rolora")
    state = method.init_state(model.initial_params(torch.Generator().manual_seed(1)))
    assert all(torch.equal(t, torch.zeros_like(t)) for k, t in state.params.items() if _kind(k) == "B")
    settings = LocalSettings(epochs=1, batch_size=8, lr=3e-3, weight_decay=0.1)
    moved_by_round = {}
    for round_ in (1, 2, 3, 4):
        frozen = method.frozen_keys(list(state.params), round_)
        results = train_clients(model, state.params, clients, tf, method.objective, settings, seed=0, round_=round_,
                                num_classes=bundle.num_classes, pack=pack, frozen=frozen)
        for r in results.values():
            for key, t in r.update.params.items():
                assert torch.equal(t, state.params[key]) == (key in frozen), (round_, key)
        new = method.server_step(state, [r.update for r in results.values()], context(round_=round_))
        moved_by_round[round_] = {_kind(k) for k in state.params if not torch.equal(new.params[k], state.params[k])}
        state = new
    assert moved_by_round == {1: {"B", "head"}, 2: {"A", "head"}, 3: {"B", "head"}, 4: {"A", "head"}}


@pytest.mark.parametrize("round_", [1, 2])
def test_the_trained_factor_is_the_exact_weighted_mean(round_: int) -> None:
    params, noisy = make_updates()
    trained = "B" if round_ == 1 else "A"
    # clients as RoLoRA's train them: the frozen factor exactly the global one
    updates = [ClientUpdate(u.client_id, u.num_samples, u.class_counts,
                            {k: (params[k] if _kind(k) in ("A", "B") and _kind(k) != trained else v)
                             for k, v in u.params.items()}) for u in noisy]
    out = parse_method("rolora").server_step(parse_method("rolora").init_state(params), updates,
                                             context(round_=round_)).params
    n = np.array([u.num_samples for u in updates], dtype=np.float64)
    w = n / n.sum()
    for key in params:
        if _kind(key) == trained or _kind(key) == "head":
            want = sum(wk * u.params[key].double().numpy() for wk, u in zip(w, updates, strict=True))
            np.testing.assert_allclose(out[key].double().numpy(), want, rtol=1e-6, atol=1e-6)
        else:
            assert torch.equal(out[key], params[key]), key  # the frozen factor, bit for bit
    for module in ("blocks.0.attn.qkv", "blocks.0.mlp.fc1"):  # exact: the merged product is the mean product
        a, b = f"{module}.lora_A", f"{module}.lora_B"
        mean_product = sum(wk * (u.params[b].double() @ u.params[a].double()).numpy()
                           for wk, u in zip(w, updates, strict=True))
        np.testing.assert_allclose((out[b].double() @ out[a].double()).numpy(), mean_product, rtol=1e-5, atol=1e-6)


def test_uploads_count_only_the_trained_factor_and_the_head() -> None:
    params, updates = make_updates()
    rolora, fedavg = parse_method("rolora"), parse_method("fedavg")
    state = rolora.init_state(params)
    size = {kind: sum(t.numel() * t.element_size() for k, t in params.items() if _kind(k) == kind)
            for kind in ("A", "B", "head")}
    full = method_costs(fedavg, state, updates, 1)["upload_bytes_per_client"]
    assert method_costs(rolora, state, updates, 1)["upload_bytes_per_client"] == full - size["A"]
    assert method_costs(rolora, state, updates, 2)["upload_bytes_per_client"] == full - size["B"]
    assert method_costs(rolora, state, updates, 1)["download_bytes_per_client"] == \
        method_costs(fedavg, state, updates, 1)["download_bytes_per_client"]


def test_the_frozen_factor_depends_on_the_round_and_asking_without_one_is_an_error() -> None:
    method = parse_method("rolora")
    keys = ["blocks.0.attn.qkv.lora_A", "blocks.0.attn.qkv.lora_B", "head.weight"]
    assert method.frozen_keys(keys, 1) == {"blocks.0.attn.qkv.lora_A"}
    assert method.frozen_keys(keys, 2) == {"blocks.0.attn.qkv.lora_B"}
    assert method.frozen_keys(keys, 5) == {"blocks.0.attn.qkv.lora_A"}
    with pytest.raises(ValueError, match="pass the round"):
        method.frozen_keys(keys)
