"""The optimised path: the real client phase of ``run`` (client/phase.py), same seeding, timed per phase.
"""

from __future__ import annotations

import torch

from livar_bench.bench.settings import BenchSettings, Workload
from livar_bench.bench.timing import PhaseTimer, PhaseTimes
from livar_bench.client.phase import train_clients
from livar_bench.client.train import LocalSettings, evaluate
from livar_bench.data.transforms import DeviceTransform
from livar_bench.methods.spec import MethodSpec
from livar_bench.models import LoraViT
from livar_bench.types import ClientUpdate, Params, RoundContext, Signal

H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H100 SXM datasheet, dense BF16 tensor-core peak
# The reference computes LIVAR's path-integral signal and the class variances; both paths collect them.
BENCH_SIGNALS = frozenset({Signal.LORA_SIGNAL, Signal.CLASS_STATS})


def run_optimised(model: LoraViT, start: Params, work: Workload, tf: DeviceTransform, settings: BenchSettings,
                  device: torch.device, dtype: torch.dtype | None, pack: int = 1) -> PhaseTimes:
    """One round through the real client/train.py path (client/packed.py with ``pack`` > 1)."""
    method = MethodSpec.parse(settings.method).build()
    local = LocalSettings(settings.epochs, settings.batch_size, settings.lr, settings.weight_decay, dtype)
    clients = [c.to(device) for c in work.clients]
    test = work.test.to(device)
    requires = BENCH_SIGNALS | method.requires

    def train_round() -> list[ClientUpdate]:  # the client phase of `run` (client/phase.py), same seeding
        # round 1: every client starts from ``start`` (no personal tensors yet); the method's client side
        # decides the objective and the frozen tensors
        results = train_clients(model, start, dict(enumerate(clients)), tf, method.objective, local,
                                seed=settings.seed, round_=1, num_classes=settings.num_classes, requires=requires,
                                pack=pack, frozen=method.frozen_keys(start, 1))
        return [results[k].update for k in range(len(clients))]

    times = PhaseTimes()
    with PhaseTimer(device) as t:
        updates = train_round()
    times.train_s, times.train_images = t.seconds, settings.epochs * sum(len(c) for c in clients)
    if t.peak_mib is not None:
        times.peak_mem_mib["train"] = t.peak_mib
    ctx = RoundContext(round=1, num_rounds=1, num_classes=settings.num_classes, lora_scale=model.scale,
                       generator=torch.Generator(device=device).manual_seed(settings.seed), local_lr=settings.lr)
    with PhaseTimer(device) as t:
        new = method.server_step(method.init_state(start), updates, ctx).params
    times.aggregate_s = t.seconds
    if t.peak_mib is not None:
        times.peak_mem_mib["aggregate"] = t.peak_mib
    with PhaseTimer(device) as t:
        evaluate(model, new, test, tf, settings.eval_batch_size, dtype)
    times.eval_s, times.eval_images = t.seconds, len(test)
    if t.peak_mib is not None:
        times.peak_mem_mib["eval"] = t.peak_mib
    return times
