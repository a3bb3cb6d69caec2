"""Byte counts of client uploads against hand computation (hand-built updates and a real tiny client)."""

from __future__ import annotations

import pytest
import torch

from livar_bench.client.costs import round_costs, upload_breakdown, upload_bytes
from livar_bench.device import peak_memory
from livar_bench.methods.base import ClassStats, ClientUpdate, Signal

LIVAR_SIGNALS = frozenset({Signal.CLASS_STATS, Signal.LORA_SIGNAL})  # variance-weighted head + path integrals
CCVR_SIGNALS = frozenset({Signal.CLASS_COV})  # class counts, means and covariances (full-covariance CCVR)


def hand_update(with_cov: bool) -> ClientUpdate:
    """C=3 classes, D=4 features, one LoRA module of rank 2 (in 4, out 4); float32 / int64 tensors."""
    c, d = 3, 4
    stats = ClassStats(
        count=torch.tensor([5, 0, 2]), mean=torch.zeros(c, d), var=torch.ones(c, d),
        count_correct=torch.tensor([4, 0, 1]), var_correct=torch.ones(c, d),
        cov=torch.zeros(c, d, d) if with_cov else None,
    )
    params = {"blocks.0.attn.qkv.lora_A": torch.zeros(2, 4), "blocks.0.attn.qkv.lora_B": torch.zeros(4, 2),
              "head.weight": torch.zeros(c, d), "head.bias": torch.zeros(c)}
    signals = {"blocks.0.attn.qkv.lora_A": torch.tensor(1.0), "blocks.0.attn.qkv.lora_B": torch.tensor(2.0)}
    return ClientUpdate(client_id=0, num_samples=7, class_counts=torch.tensor([5, 0, 2]), params=params,
                        signals={"class_stats": stats, "lora_signal": signals})


# params: A 2*4 + B 4*2 + head 3*4 + 3 = 31 floats = 124 B; meta: num_samples 8 B + class_counts 3*8 = 32 B
PARAMS_B, META_B = 124, 32
# class stats: count + count_correct 2*3*8 = 48 B; mean, var, var_correct 3 * 3*4*4 = 144 B -> 192 B
STATS_B = 192
COV_B = 3 * 4 * 4 * 4  # [C, D, D] float32 = 192 B
SIGNAL_B = 2 * 4  # one float32 per LoRA factor


def test_fedavg_sends_params_and_counts_only() -> None:
    assert upload_bytes(hand_update(with_cov=True), frozenset()) == PARAMS_B + META_B


def test_livar_hand_computed() -> None:
    parts = upload_breakdown(hand_update(with_cov=False), LIVAR_SIGNALS)
    assert parts == {"params": PARAMS_B, "meta": META_B, "class_stats": STATS_B, "lora_signal": SIGNAL_B}
    assert upload_bytes(hand_update(with_cov=False), LIVAR_SIGNALS) == 356


def test_ccvr_hand_computed() -> None:
    parts = upload_breakdown(hand_update(with_cov=True), CCVR_SIGNALS)
    assert parts["class_stats"] == STATS_B + COV_B and "lora_signal" not in parts
    assert upload_bytes(hand_update(with_cov=True), CCVR_SIGNALS) == 540


def test_round_costs_average_and_download() -> None:
    u = hand_update(with_cov=False)
    costs = round_costs([u, u], [u.params], LIVAR_SIGNALS)
    assert costs == {"upload_bytes_per_client": 356.0, "upload_signal_bytes_per_client": 200.0,
                     "download_bytes_per_client": 124.0}
    # dense base-weight corrections of the server state are downloaded too: [4, 4] float32 = 64 B
    with_deltas = round_costs([u], [u.params, {"blocks.0.attn.qkv": torch.zeros(4, 4)}], LIVAR_SIGNALS)
    assert with_deltas["download_bytes_per_client"] == 124.0 + 64


def test_half_precision_counts_two_bytes() -> None:
    u = hand_update(with_cov=False)
    half = ClientUpdate(0, 7, u.class_counts, {k: v.half() for k, v in u.params.items()})
    assert upload_bytes(half, frozenset()) == PARAMS_B // 2 + META_B


def test_registered_methods_request_what_is_counted() -> None:
    """The hand counts above assume these signal sets; they must be what the methods declare."""
    from livar_bench.methods import parse_method

    assert parse_method("livar").requires == LIVAR_SIGNALS
    assert parse_method("ccvr[model=pooled_full]").requires == CCVR_SIGNALS
    assert parse_method("livar+ccvr[model=pooled_full]").requires == LIVAR_SIGNALS | CCVR_SIGNALS
    assert parse_method("ccvr").requires == {Signal.CLASS_STATS}  # the reference: diagonal client Gaussians
    # Ablations send less: head-only LIVAR no path integrals, LoRA-only LIVAR no class statistics.
    u = hand_update(with_cov=False)
    assert upload_bytes(u, parse_method("livar[lora=false]").requires) == PARAMS_B + META_B + STATS_B
    assert upload_bytes(u, parse_method("livar[head=false]").requires) == PARAMS_B + META_B + SIGNAL_B
    assert upload_bytes(u, parse_method("ties").requires) == PARAMS_B + META_B


def test_real_micro_vit_client_upload() -> None:
    """A real client of livar_micro_vit (D=32, depth 2, mlp 64, rank 2, 10 classes) against hand counts."""
    from livar_bench.client.train import LocalSettings, local_train
    from livar_bench.data.offline import make_synthetic
    from livar_bench.data.transforms import DeviceTransform
    from livar_bench.models import build_model

    bundle = make_synthetic(train_per_class=3, test_per_class=1)
    model, info = build_model("livar_micro_vit", 10, rank=2, alpha=2.0)
    tf = DeviceTransform(info.input_size, info.mean, info.std, scale=bundle.crop_scale, eval_crop=bundle.eval_crop)
    start = model.initial_params(torch.Generator().manual_seed(0))
    requires = LIVAR_SIGNALS | CCVR_SIGNALS
    result = local_train(model, start, bundle.train, tf, lambda z, y, p, a: torch.nn.functional.cross_entropy(z, y),
                         LocalSettings(epochs=1, batch_size=16, lr=1e-3), torch.Generator().manual_seed(1), 10,
                         requires)
    # LoRA per block: qkv A 2x32 + B 96x2, proj 2x32 + 32x2, fc1 2x32 + 64x2, fc2 2x64 + 32x2 = 768 floats
    params_b = (2 * 768 + 32 * 10 + 10) * 4  # two blocks + head = 7464 B
    meta_b = 8 + 10 * 8
    stats_b = 2 * 10 * 8 + 3 * 10 * 32 * 4  # counts + mean/var/var_correct
    cov_b = 10 * 32 * 32 * 4
    signal_b = 2 * 4 * 2 * 4  # blocks * modules * factors * float32
    assert upload_bytes(result.update, frozenset()) == params_b + meta_b
    assert upload_bytes(result.update, LIVAR_SIGNALS) == params_b + meta_b + stats_b + signal_b == 11616
    assert upload_bytes(result.update, CCVR_SIGNALS) == params_b + meta_b + stats_b + cov_b == 52512


def test_peak_memory_is_labelled_by_device() -> None:
    cpu = peak_memory(torch.device("cpu"))
    assert set(cpu) <= {"peak_host_rss_bytes"}
    if cpu:
        assert cpu["peak_host_rss_bytes"] > 1e6  # a Python process with torch loaded uses megabytes


@pytest.mark.gpu
def test_peak_memory_cuda() -> None:
    x = torch.empty(1 << 20, device="cuda")  # 4 MiB
    assert peak_memory(torch.device("cuda"))["peak_cuda_mem_bytes"] >= x.numel() * 4
