"""Cross-device scale (``livar-bench bench-scale``): time per round and peak memory as the population grows
while the number of clients per round stays fixed.

Each (method, population K) is one real run of the round loop (``run_federation``: partition, sampling,
local training, aggregation, evaluation, checkpoints) in a fresh process, so that its peak resident memory
is its own. What changes with K is only the population: the training set has a fixed size (an IID
partition gives each client N / K samples), each round samples the same number of clients, and each of them
takes a fixed number of local steps (``--local-work steps[min=s,max=s]``), so the work of a round is the
same at every K. A harness whose partitioning, sampling, per-round work or memory grew with the population
would show it here; what may grow is the per-client state a method keeps (FedSA-LoRA's personal B, in host
memory), which each row reports.

Reported per row: the median wall time of a round (rounds 2.., the first pays one-off warm-up), the
one-off set-up (data to the device, model, partition and its files), the process's peak resident set
size and the per-client state after the last round (``ServerState.client_state_bytes``).
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from livar_bench.errors import BenchError


@dataclass(frozen=True)
class ScaleSettings:
    """What every row of one ``bench-scale`` shares."""

    per_round: int = 10  # clients sampled per round
    rounds: int = 4
    samples: int = 60_000  # training set size (every population splits the same set)
    steps: int = 5  # local steps of each sampled client per round
    batch_size: int = 8
    backbone: str = "livar_micro_vit"
    test_samples: int = 200


@dataclass(frozen=True)
class ScaleRow:
    method: str
    clients: int
    per_round: int
    round_s: float  # median wall time of rounds 2..R
    first_round_s: float
    setup_s: float  # data to the device, model, partition (and its files) before round 1
    peak_rss_bytes: int
    client_state_bytes: int  # per-client state after the last round


def participation(per_round: int, clients: int) -> float:
    """The participation whose ceil(participation * clients) is exactly ``per_round``."""
    if not 1 <= per_round <= clients:
        raise BenchError(f"--per-round {per_round} must be between 1 and the number of clients ({clients})")
    p = per_round / clients
    while math.ceil(p * clients) > per_round:  # floating point: 10 / 10000 * 10000 may be 10.000000000000002
        p = math.nextafter(p, 0.0)
    return p


def scale_data(samples: int, test_samples: int, size: int = 16, classes: int = 10, seed: int = 0):
    """A synthetic bundle (class patterns plus noise, as ``data.offline.make_synthetic``) generated chunk by
    chunk straight to uint8, so that making 60,000 images does not set the process's memory peak."""
    import torch

    from livar_bench.data.base import DatasetBundle, ImageSplit

    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(classes, 3, 4, 4, generator=g)
    patterns = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)

    def split(n: int) -> ImageSplit:
        labels = torch.arange(n) % classes
        images = torch.empty(n, 3, size, size, dtype=torch.uint8)
        for begin in range(0, n, 4096):
            part = labels[begin:begin + 4096]
            noise = torch.randn(len(part), 3, size, size, generator=g) * 0.12
            images[begin:begin + 4096] = (patterns[part] + noise).clamp(0, 1).mul(255).round().to(torch.uint8)
        return ImageSplit(images, labels)

    return DatasetBundle("synthetic", split(samples), split(test_samples), tuple(f"class{i}" for i in range(classes)),
                         crop_scale=(0.6, 1.0), eval_crop=1.0)


def scale_spec(method: str, clients: int, settings: ScaleSettings):
    """The run one row measures; raises ``BenchError`` for settings no run could take (the CLI checks every
    row's before the first process starts, so a bad setting is one line and not a failed subprocess)."""
    from livar_bench.config import make_spec
    from livar_bench.models.loading import weights_problem

    if settings.samples < clients:
        raise BenchError(f"{clients} clients need at least as many training samples; raise --samples")
    problem = weights_problem(settings.backbone, pretrained=False)
    if problem:
        raise BenchError(f"--backbone: {problem}; see `livar-bench ls backbones`")
    return make_spec({"dataset": "synthetic", "backbone": settings.backbone, "pretrained": False,
                      "num_clients": clients, "participation": participation(settings.per_round, clients),
                      "partition": "iid", "min_client_samples": 1, "rounds": settings.rounds,
                      "local_work": f"steps[min={settings.steps},max={settings.steps}]",
                      "batch_size": settings.batch_size, "lora_rank": 2, "lora_alpha": 2.0, "lr": 3e-3,
                      "device": "cpu", "method": method, "seed": 0})


def measure_here(method: str, clients: int, settings: ScaleSettings) -> ScaleRow:
    """One row, measured in this process (``measure`` runs it in a fresh one)."""
    import pandas as pd

    from livar_bench.device import peak_memory
    from livar_bench.federation import run_federation

    spec = scale_spec(method, clients, settings)
    bundle = scale_data(settings.samples, settings.test_samples)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as out:
        start = time.perf_counter()
        outcome = run_federation(spec, out, bundle=bundle)
        total = time.perf_counter() - start
        frame = pd.read_csv(outcome.run_dir / "metrics.csv")
    cost = frame[frame["split"] == "cost"]
    wall = cost[cost["metric"] == "wall_s"].sort_values("round")["value"].tolist()
    state = cost[cost["metric"] == "client_state_bytes"].sort_values("round")["value"].tolist()
    rss = peak_memory(__import__("torch").device("cpu")).get("peak_host_rss_bytes", 0.0)
    return ScaleRow(method, clients, settings.per_round, statistics.median(wall[1:] or wall), wall[0],
                    total - sum(wall), int(rss), int(state[-1]))


def measure(method: str, clients: int, settings: ScaleSettings) -> ScaleRow:
    """One row, measured in a fresh Python process (its peak memory is then its own)."""
    command = [sys.executable, "-m", "livar_bench.bench.scale", method, str(clients), json.dumps(asdict(settings))]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchError(f"bench-scale: the run of {method} with {clients} clients failed: {last}")
    return ScaleRow(**json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":  # one row, in its own process: python -m livar_bench.bench.scale METHOD K SETTINGS
    import os

    os.environ.setdefault("LIVAR_BENCH_THREADS", "1")
    from livar_bench.resources import configure_threads

    configure_threads()
    row = measure_here(sys.argv[1], int(sys.argv[2]), ScaleSettings(**json.loads(sys.argv[3])))
    print(json.dumps(asdict(row)))
