"""CUDA-only checks of the fast path (run with `pytest -m gpu`; skipped without a CUDA device)."""

from __future__ import annotations

import warnings

import pytest
import torch

from livar_bench.bench import BenchSettings, run_bench
from livar_bench.client.packed import packed_local_train
from livar_bench.client.train import LocalSettings, local_train
from livar_bench.data.offline import make_synthetic
from livar_bench.data.transforms import DeviceTransform
from livar_bench.methods.base import CrossEntropy, Signal
from livar_bench.models import build_model

pytestmark = pytest.mark.gpu
SIGNALS = frozenset({Signal.LORA_SIGNAL, Signal.CLASS_STATS})


@pytest.fixture(scope="module")
def cuda_setup():
    device = torch.device("cuda")
    bundle = make_synthetic(train_per_class=8, test_per_class=1)
    model, info = build_model("livar_micro_vit", bundle.num_classes, rank=2, alpha=4.0, pretrained=False)
    model.to(device)
    tf = DeviceTransform(info.input_size, info.mean, info.std, scale=(0.6, 1.0))
    g = torch.Generator().manual_seed(1)
    start = {k: v.to(device) for k, v in model.initial_params(g).items()}
    train = bundle.train.to(device)
    datas = [train.subset(torch.arange(a, a + n, device=device)) for a, n in ((0, 21), (21, 40), (61, 9))]
    return device, model, tf, start, datas, bundle.num_classes


def _count_syncs(fn) -> int:
    """Host-device synchronisations performed by ``fn`` (CUDA sync debug mode, as warnings)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("packed", [False, True], ids=["sequential", "packed"])
def test_no_sync_inside_the_step(cuda_setup, packed):
    """The number of host syncs must not grow with the number of steps (they happen per client only)."""
    device, model, tf, start, datas, c = cuda_setup

    def train(epochs: int):
        settings = LocalSettings(epochs=epochs, batch_size=8, lr=1e-3, autocast_dtype=torch.bfloat16)
        gens = [torch.Generator(device=device).manual_seed(k) for k in range(len(datas))]
        if packed:
            return lambda: packed_local_train(model, start, datas, tf, CrossEntropy(), settings, gens, c, SIGNALS)
        return lambda: [local_train(model, start, d, tf, CrossEntropy(), settings, g, c, SIGNALS)
                        for d, g in zip(datas, gens, strict=True)]

    train(1)()  # warm-up: lazy initialisations may sync once
    assert _count_syncs(train(1)) == _count_syncs(train(4))


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_packed_matches_sequential_on_cuda(cuda_setup, dtype):
    device, model, tf, start, datas, c = cuda_setup
    settings = LocalSettings(epochs=2, batch_size=8, lr=3e-3, autocast_dtype=dtype)
    seq = [local_train(model, start, d, tf, CrossEntropy(), settings, torch.Generator(device=device).manual_seed(k), c,
                       SIGNALS) for k, d in enumerate(datas)]
    gens = [torch.Generator(device=device).manual_seed(k) for k in range(len(datas))]
    packed = packed_local_train(model, start, datas, tf, CrossEntropy(), settings, gens, c, SIGNALS)
    tol = 1e-4 if dtype is None else 3e-2  # bf16 matmuls round differently when batched
    for a, b in zip(seq, packed, strict=True):
        assert abs(a.mean_loss - b.mean_loss) <= tol * max(1.0, abs(a.mean_loss))
        for key in a.update.params:
            torch.testing.assert_close(b.update.params[key], a.update.params[key], atol=tol, rtol=tol)


def test_bench_on_cuda():
    result = run_bench(BenchSettings(backbone="livar_tiny_vit", clients=3, samples_per_client=32, eval_samples=64,
                                     num_classes=10, device="cuda", pack=3))
    assert result["precision"] == "bf16" and result["fused_attention"]
    for name in ("optimised", "packed", "reference"):
        assert result[name]["peak_mem_mib"]["train"] > 0
    assert result["speedup"]["train_images_per_s"] > 0  # measured, not asserted: speed is bench's job
