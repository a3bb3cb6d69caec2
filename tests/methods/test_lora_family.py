"""The federated-LoRA family: hand-computed cases, exactness, frozen A, personal B."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from livar_bench.config import make_spec
from livar_bench.federation import run_federation
from livar_bench.methods import ClientUpdate, RoundContext, parse_method
from tests.methods._fakes import context, make_updates

SCALE = 2.0


def two_clients() -> tuple[dict, list[ClientUpdate]]:
    """One 1x1 LoRA module and a 1-class head; clients with n = 1, 3 (weights 1/4, 3/4)."""
    glob = {"m.lora_A": torch.tensor([[1.0]]), "m.lora_B": torch.tensor([[0.0]]),
            "head.weight": torch.tensor([[0.0]]), "head.bias": torch.tensor([0.0])}
    ups = [ClientUpdate(0, 1, torch.zeros(1), {"m.lora_A": torch.tensor([[2.0]]), "m.lora_B": torch.tensor([[1.0]]),
                                               "head.weight": torch.tensor([[4.0]]), "head.bias": torch.tensor([1.0])}),
           ClientUpdate(1, 3, torch.zeros(1), {"m.lora_A": torch.tensor([[1.0]]), "m.lora_B": torch.tensor([[3.0]]),
                                               "head.weight": torch.tensor([[0.0]]), "head.bias": torch.tensor([5.0])})]
    return glob, ups


def ctx(round_: int = 1) -> RoundContext:
    return RoundContext(round_, 2, 1, SCALE, torch.Generator().manual_seed(0))


def test_fedex_lora_by_hand() -> None:
    # B = 1/4 * 1 + 3/4 * 3 = 2.5, A = 1/4 * 2 + 3/4 * 1 = 1.25; exact = 2 * (1/4 * 2 + 3/4 * 3) = 5.5;
    # residual = 5.5 - 2 * 2.5 * 1.25 = -0.75.
    glob, ups = two_clients()
    method = parse_method("fedex_lora")
    state = method.server_step(method.init_state(glob), ups, ctx())
    assert float(state.params["m.lora_B"]) == 2.5 and float(state.params["m.lora_A"]) == 1.25
    assert float(state.params["head.bias"]) == pytest.approx(4.0)
    torch.testing.assert_close(state.base_deltas["m"], torch.tensor([[-0.75]]))
    # round 2 accumulates: the same updates again add another -0.75
    again = method.server_step(state, ups, ctx(2))
    torch.testing.assert_close(again.base_deltas["m"], torch.tensor([[-1.5]]))


def test_flora_by_hand() -> None:
    # folded = 2 * (1/4 * 1 * 2 + 3/4 * 3 * 1) = 5.5; B restarts at 0, A fresh in U(-1, 1) (in = 1).
    glob, ups = two_clients()
    method = parse_method("flora")
    state = method.server_step(method.init_state(glob), ups, ctx())
    torch.testing.assert_close(state.base_deltas["m"], torch.tensor([[5.5]]))
    assert float(state.params["m.lora_B"]) == 0.0 and abs(float(state.params["m.lora_A"])) <= 1.0
    assert float(state.params["head.weight"]) == pytest.approx(1.0)


def effective(state, module: str, scale: float) -> torch.Tensor:
    """D + s B A: what the global model adds to W0 for ``module``."""
    a, b = state.params[f"{module}.lora_A"].double(), state.params[f"{module}.lora_B"].double()
    base = state.base_deltas.get(module, torch.zeros(b.shape[0], a.shape[1], dtype=torch.float64)).double()
    return base + scale * b @ a


MODULES = ("blocks.0.attn.qkv", "blocks.0.mlp.fc1")


@pytest.mark.parametrize("name", ["fedex_lora", "flora", "livar_exact"])
def test_global_model_is_the_exact_average_after_every_round(name: str) -> None:
    """Client k's model is W0 + D_{t-1} + s B_k A_k, so the exact weighted average of the client models is
    W0 + D_{t-1} + s sum_k w_k B_k A_k; the new global W0 + D_t + s B_t A_t must equal it, every round
    (w = sample weights; for livar_exact LIVAR's per-module signal weights)."""
    method = parse_method(name)
    params, _ = make_updates()
    state = method.init_state(params)
    for round_ in (1, 2, 3):
        _, updates = make_updates(seed=round_)
        base_before = {m: state.base_deltas.get(m) for m in MODULES}
        if name == "livar_exact":
            from livar_bench.methods.livar import lora_weights

            weights = lora_weights(updates, list(MODULES), method.aggregator.weighting_rule)  # [K, M]
        else:
            n = torch.tensor([u.num_samples for u in updates], dtype=torch.float64)
            weights = (n / n.sum())[:, None].expand(-1, len(MODULES))
        state = method.server_step(state, updates, context(lora_scale=SCALE, round_=round_))
        for j, m in enumerate(MODULES):
            average = sum(float(weights[k, j]) * SCALE * (u.params[f"{m}.lora_B"].double() @ u.params[f"{m}.lora_A"].double())
                          for k, u in enumerate(updates))
            previous = base_before[m].double() if base_before[m] is not None else 0.0
            torch.testing.assert_close(effective(state, m, SCALE), previous + average, rtol=1e-5, atol=1e-5)


def test_ffa_lora_never_changes_a_on_the_server() -> None:
    params, updates = make_updates()
    method = parse_method("ffa_lora")
    state = method.init_state(params)
    for round_ in (1, 2):
        state = method.server_step(state, updates, context(round_=round_))
    for key in params:
        if key.endswith(".lora_A"):
            assert torch.equal(state.params[key], params[key])
    assert method.frozen_keys(list(params)) == {k for k in params if k.endswith(".lora_A")}


@pytest.mark.parametrize("pack", [1, 3])
def test_ffa_lora_clients_leave_a_exactly_as_received(pack, tiny_spec_values) -> None:
    from livar_bench.client.objectives import CrossEntropy
    from livar_bench.client.phase import train_clients
    from livar_bench.client.train import LocalSettings
    from livar_bench.federation import setup_run
    from livar_bench.seeding import STREAM_INIT, generator

    spec = make_spec({**tiny_spec_values, "method": "ffa_lora"})
    s = setup_run(spec)
    start = s.model.initial_params(generator(0, STREAM_INIT))
    frozen = parse_method("ffa_lora").frozen_keys(list(start))
    results = train_clients(s.model, start, dict(enumerate(s.clients)), s.train_tf, CrossEntropy(),
                            LocalSettings(1, 32, 3e-3, 0.1), seed=0, round_=1, num_classes=s.bundle.num_classes,
                            pack=pack, frozen=frozen)
    for r in results.values():
        for key in start:
            same = torch.equal(r.update.params[key], start[key])
            assert same == (key in frozen), key  # A bit for bit; B and head trained


def test_fedsa_lora_keeps_each_clients_b() -> None:
    params, updates = make_updates()
    method = parse_method("fedsa_lora")
    state = method.server_step(method.init_state(params), updates, context())
    n = torch.tensor([u.num_samples for u in updates], dtype=torch.float64)
    a_key, b_key = "blocks.0.attn.qkv.lora_A", "blocks.0.attn.qkv.lora_B"
    expected_a = sum(float(n[k] / n.sum()) * u.params[a_key].double() for k, u in enumerate(updates))
    torch.testing.assert_close(state.params[a_key].double(), expected_a, rtol=1e-6, atol=1e-6)
    for u in updates:
        start = method.client_start(state, u.client_id)
        assert torch.equal(start[b_key], u.params[b_key])  # its own B
        assert torch.equal(start[a_key], state.params[a_key])  # the global A
        personal = method.personal_params(state, u)
        assert torch.equal(personal[b_key], u.params[b_key]) and torch.equal(personal["head.bias"], state.params["head.bias"])
    # a client not seen yet starts from the global tensors
    assert method.client_start(state, 99) is state.params
    # personal B lives in the per-client state, in host memory, and nowhere else
    assert all(v.device.type == "cpu" for v in state.client_state.values())
    assert not any(".lora_B" in k for k in state.buffers)
    b_bytes = sum(v.numel() * v.element_size() for k, v in params.items() if k.endswith(".lora_B"))
    assert state.client_state_bytes() == len(updates) * b_bytes


def test_exact_methods_evaluate_the_same_model_after_round_one(tmp_path, tiny_spec_values) -> None:
    """Round 1 starts all methods from the same tensors with the same client training, and FedEx-LoRA and
    FLoRA both evaluate W0 + sum_k w_k s B_k A_k with the FedAvg head: the same model, the same numbers.
    (This also checks that the loop applies base_deltas to the backbone when evaluating.)"""
    def round1(method: str) -> pd.Series:
        spec = make_spec({**tiny_spec_values, "method": method, "rounds": 1})
        rows = pd.read_csv(run_federation(spec, tmp_path / method).run_dir / "metrics.csv")
        test = rows[(rows["split"] == "test") & (rows["round"] == 1)]
        return test.set_index("metric")["value"]

    fedex, flora, fedavg = round1("fedex_lora"), round1("flora"), round1("fedavg")
    assert fedex["loss"] == pytest.approx(flora["loss"], rel=1e-5)
    assert fedex["acc"] == pytest.approx(flora["acc"], abs=1e-9)
    assert fedex["loss"] != fedavg["loss"]  # FedAvg of factors is not the exact average


def test_dense_residuals_are_counted_in_the_download(tmp_path, tiny_spec_values) -> None:
    def download(method: str) -> float:
        spec = make_spec({**tiny_spec_values, "method": method, "rounds": 2})
        rows = pd.read_csv(run_federation(spec, tmp_path / method).run_dir / "metrics.csv")
        cost = rows[(rows["split"] == "cost") & (rows["metric"] == "download_bytes_per_client")]
        return float(cost[cost["round"] == 2]["value"].item())

    # livar_micro_vit: the dense [out, in] float32 of every adapted module, on top of what FedAvg sends
    from livar_bench.models import build_model

    model, _ = build_model("livar_micro_vit", 10, rank=2, alpha=2.0, pretrained=False)
    dense = sum(4 * m.base_layer.weight.numel() for name, m in model.net.named_modules() if hasattr(m, "base_layer"))
    assert download("fedex_lora") == download("fedavg") + dense
    assert math.isfinite(download("flora"))


def svd_best(dense: torch.Tensor, rank: int) -> torch.Tensor:
    """Independent reference: the best rank-r approximation via numpy's SVD."""
    import numpy as np

    u, s, vh = np.linalg.svd(dense.double().numpy(), full_matrices=False)
    return torch.from_numpy((u[:, :rank] * s[:rank]) @ vh[:rank])


def test_fedavg_in_product_space_is_the_truncated_exact_mean() -> None:
    params, updates = make_updates()
    out = parse_method("fedavg[space=product]").aggregate(params, updates, context(lora_scale=SCALE))
    n = torch.tensor([u.num_samples for u in updates], dtype=torch.float64)
    for m in MODULES:
        mean = sum(float(n[k] / n.sum()) * (u.params[f"{m}.lora_B"].double() @ u.params[f"{m}.lora_A"].double())
                   for k, u in enumerate(updates))
        got = out[f"{m}.lora_B"].double() @ out[f"{m}.lora_A"].double()
        torch.testing.assert_close(got, svd_best(mean, params[f"{m}.lora_A"].shape[0]), rtol=1e-4, atol=1e-5)
    factors = parse_method("fedavg").aggregate(params, updates, context(lora_scale=SCALE))
    torch.testing.assert_close(out["head.weight"], factors["head.weight"])  # the head is merged as before


def test_task_arithmetic_in_product_space_by_hand() -> None:
    # taus are dense products; task arithmetic (no trim, no election) at lam 1 with the mean reduce is the
    # plain mean of the client products (uniform weights), truncated to the global rank.
    params, updates = make_updates()
    out = parse_method("task_arithmetic[space=product,lam=1]").aggregate(params, updates, context(lora_scale=SCALE))
    for m in MODULES:
        mean = sum(u.params[f"{m}.lora_B"].double() @ u.params[f"{m}.lora_A"].double() for u in updates) / len(updates)
        got = out[f"{m}.lora_B"].double() @ out[f"{m}.lora_A"].double()
        torch.testing.assert_close(got, svd_best(mean, params[f"{m}.lora_A"].shape[0]), rtol=1e-4, atol=1e-5)


def test_ties_in_product_space_trims_dense_task_vectors() -> None:
    params, updates = make_updates()
    full = parse_method("ties[space=product,density=1,sign_election=false,lam=1]").aggregate(
        params, updates, context(lora_scale=SCALE))
    ta = parse_method("task_arithmetic[space=product,lam=1]").aggregate(params, updates, context(lora_scale=SCALE))
    for key in params:
        torch.testing.assert_close(full[key], ta[key])  # TIES at full density without election = task arithmetic
    trimmed = parse_method("ties[space=product]").aggregate(params, updates, context(lora_scale=SCALE))
    assert not torch.allclose(trimmed["blocks.0.attn.qkv.lora_B"], ta["blocks.0.attn.qkv.lora_B"])


def test_fedsa_lora_resumes_a_checkpoint_that_kept_b_in_the_buffers() -> None:
    """Checkpoints written before per-client state moved to the host kept B_k in ``state.buffers``
    (``fedsa_lora.B.<client>.<key>``): a client still starts from its own B, and the next round moves it."""
    params, updates = make_updates()
    method = parse_method("fedsa_lora")
    b_key = "blocks.0.attn.qkv.lora_B"
    old = method.init_state(params).evolve(buffers={f"fedsa_lora.B.{u.client_id}.{k}": v for u in updates
                                                    for k, v in u.params.items() if k.endswith(".lora_B")})
    for u in updates:
        assert torch.equal(method.client_start(old, u.client_id)[b_key], u.params[b_key])
    new = method.server_step(old, updates[:1], context())
    assert torch.equal(new.client_state[f"fedsa_lora.B.0.{b_key}"], updates[0].params[b_key])
    assert torch.equal(method.client_start(new, 1)[b_key], updates[1].params[b_key])  # still from the buffers

