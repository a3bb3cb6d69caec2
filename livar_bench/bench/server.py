"""Server-side cost of each method as the number of clients grows (``livar-bench bench-server``).

The server step of a method sees only tensors, so it can be timed at full model size without training: the
global trainable tensors of a ViT (every block's qkv, proj, fc1, fc2 LoRA factors and a head) and K synthetic
client updates with random factors and the signals the method asks for. Reported per (method, K): the median
``server_step`` time, the bytes the server holds (the K updates plus the state it keeps: buffers and dense
base-weight corrections) and, on CUDA, the peak allocated memory of the step. From the bytes per client, the
largest K that fits a GPU of a given size is estimated (updates and state only; activations and the
backbone are not the server's).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from livar_bench.client.costs import tensor_bytes
from livar_bench.methods.spec import MethodSpec
from livar_bench.seeding import generator
from livar_bench.types import ClassStats, ClientUpdate, Params, RoundContext, Signal, needs_class_stats

# ViT-B/16: 12 blocks, width 768, MLP 3072.
VIT_B = {"depth": 12, "dim": 768, "mlp": 3072}


@dataclass(frozen=True)
class ServerRow:
    method: str
    clients: int
    server_s: float
    held_bytes: int
    state_bytes: int
    peak_cuda_bytes: int | None


def vit_params(depth: int, dim: int, mlp: int, rank: int, classes: int, device: torch.device,
               g: torch.Generator) -> Params:
    """Global trainable tensors with ViT shapes (LoRA on qkv, proj, fc1, fc2 of every block, and a head)."""
    shapes = {"attn.qkv": (3 * dim, dim), "attn.proj": (dim, dim), "mlp.fc1": (mlp, dim), "mlp.fc2": (dim, mlp)}
    params: Params = {}
    for block in range(depth):
        for name, (out, inp) in shapes.items():
            params[f"blocks.{block}.{name}.lora_A"] = torch.randn(rank, inp, generator=g).to(device) * 0.02
            params[f"blocks.{block}.{name}.lora_B"] = torch.randn(out, rank, generator=g).to(device) * 0.02
    params["head.weight"] = torch.randn(classes, dim, generator=g).to(device) * 0.02
    params["head.bias"] = torch.zeros(classes, device=device)
    return params


def synthetic_updates(params: Params, clients: int, requires: frozenset[Signal], classes: int, dim: int,
                      g: torch.Generator) -> list[ClientUpdate]:
    """K updates: params + noise, random class counts, and the requested signals at their real shapes."""
    device = next(iter(params.values())).device
    out = []
    for k in range(clients):
        counts = torch.randint(0, 20, (classes,), generator=g)
        signals: dict = {}
        if Signal.LORA_SIGNAL in requires:
            signals["lora_signal"] = {key: torch.rand((), generator=g).to(device) for key in params if ".lora_" in key}
        if needs_class_stats(requires):
            var = torch.rand(classes, dim, generator=g).to(device)
            cov = None
            if Signal.CLASS_COV in requires:
                cov = torch.eye(dim, device=device).expand(classes, dim, dim).clone()
            signals["class_stats"] = ClassStats(counts.to(device), torch.randn(classes, dim, generator=g).to(device), var,
                                                counts.to(device), var, cov)
        noisy = {key: v + 0.01 * torch.randn(v.shape, generator=g).to(device) for key, v in params.items()}
        out.append(ClientUpdate(k, int(counts.sum()) + 1, counts, noisy, signals))
    return out


def measure(method: str, clients: int, *, depth: int = VIT_B["depth"], dim: int = VIT_B["dim"], mlp: int = VIT_B["mlp"],
            rank: int = 16, classes: int = 100, repeats: int = 3, device: torch.device | None = None) -> ServerRow:
    """Time ``server_step`` of ``method`` over ``clients`` synthetic ViT-sized updates."""
    device = device or torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    spec = MethodSpec.parse(method)
    m = spec.build()
    params = vit_params(depth, dim, mlp, rank, classes, device, g)
    updates = synthetic_updates(params, clients, m.requires, classes, dim, g)
    state = m.init_state(params)
    times, peak, out = [], None, state
    for r in range(repeats):
        ctx = RoundContext(round=r + 1, num_rounds=repeats, num_classes=classes, lora_scale=1.0,
                           generator=generator(0, 3, r, device=device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        out = m.server_step(state, updates, ctx)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            peak = int(torch.cuda.max_memory_allocated(device))
        times.append(time.perf_counter() - t0)
    state_bytes = tensor_bytes(out.params.values()) + tensor_bytes(out.buffers.values()) + out.client_state_bytes() + \
        tensor_bytes(out.base_deltas.values())
    update_bytes = sum(_update_bytes(u) for u in updates)
    return ServerRow(str(spec), clients, statistics.median(times), update_bytes + state_bytes, state_bytes, peak)


def _update_bytes(u: ClientUpdate) -> int:
    total = tensor_bytes(u.params.values()) + tensor_bytes([u.class_counts])
    stats = u.class_stats
    if stats is not None:
        total += tensor_bytes([stats.count, stats.mean, stats.var, stats.count_correct, stats.var_correct, stats.cov])
    if u.lora_signals is not None:
        total += tensor_bytes(u.lora_signals.values())
    return total


def max_clients(rows: list[ServerRow], gpu_bytes: float) -> int | None:
    """Largest K whose held bytes fit ``gpu_bytes``, extrapolating linearly from the two largest measured K of
    one method (held bytes = constant state + K x per-client bytes, per-client server buffers included)."""
    if len(rows) < 2:
        return None
    a, b = sorted(rows, key=lambda r: r.clients)[-2:]
    per_client = (b.held_bytes - a.held_bytes) / (b.clients - a.clients)
    constant = b.held_bytes - per_client * b.clients
    return int(max(gpu_bytes - constant, 0) // max(per_client, 1))
