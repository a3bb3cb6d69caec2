"""Shared fixtures: tiny deterministic data and models so the CPU suite stays fast."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("LIVAR_BENCH_FSYNC", "0")  # ~7 ms per file on this machine; process crashes never need it
os.environ.setdefault("LIVAR_BENCH_CACHE", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "livar-bench"))
# One thread: the test models are tiny, and on a shared 2-core machine several threads per process
# spin against each other (measured ~60x slower local training under load than with one thread).
torch.set_num_threads(int(os.environ.get("LIVAR_BENCH_TEST_THREADS", "1")))
os.environ.setdefault("LIVAR_BENCH_THREADS", os.environ.get("LIVAR_BENCH_TEST_THREADS", "1"))  # sweeps keep it


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_spec_values() -> dict:
    """Settings of a run that takes about a second on a CPU."""
    return dict(dataset="synthetic", backbone="livar_micro_vit", num_clients=3, rounds=2, local_epochs=1,
                batch_size=32, lr=3e-3, alpha=0.5, lora_rank=2, lora_alpha=2.0, device="cpu", seed=0)
