"""Client packing: train K clients' LoRA adapters and heads in one batched forward/backward.

Sequential simulation runs one small batch per client per step, which leaves a GPU mostly idle. Packed,
the frozen backbone sees the K clients' batches concatenated ([K*B, ...]), and each sample goes through
its own client's LoRA factors and head by batched matmuls (``bmm`` over the client axis): the PEFT
LoRA layers and the head get a packed ``forward`` for the duration of the call, and nothing else of the
model changes. Per-client trainable tensors live in one flat buffer [K, P] (views per key), so the
AdamW update, the gradient reset and the path-integral signal are a handful of kernels for all
clients together.

Equivalence with ``local_train`` run client after client (tests/client/test_packed.py checks params, loss,
LIVAR signals and class statistics):
- each client draws its sample order and augmentation from its own generator, in the same order;
- each client's loss is its own objective on its own rows, so gradients do not mix (padded rows of a
  short last batch carry no loss);
- clients with fewer steps (smaller datasets) are *inactive* in the trailing steps: their AdamW update,
  weight decay, moments and step count are left untouched exactly (a masked update written here, with
  torch.optim.AdamW's maths), and their signal accumulates nothing.
Clients are ordered by decreasing step count, so the active ones are always a prefix (slices, no
gathers and no host synchronisation in the step).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from livar_bench.client.collectors import collectors_for
from livar_bench.client.objectives import LocalObjective
from livar_bench.client.train import (
    ClientResult,
    LocalSettings,
    autocast,
    batch_schedule,
    epochs_for,
    finish_client,
    full_steps,
)
from livar_bench.data.base import ImageSplit
from livar_bench.data.transforms import DeviceTransform
from livar_bench.errors import BenchError
from livar_bench.models import LoraViT
from livar_bench.types import Params, Signal

BETAS = (0.9, 0.999)  # torch.optim.AdamW defaults, as make_optimizer uses them
EPS = 1e-8
AUTO_PACK_CUDA = 10  # the reference protocol's client count; one pack per round on one GPU


def resolve_pack(pack: int | None, device: torch.device, num_clients: int) -> int:
    """Clients per pack: ``None`` = auto (off on CPU, where packing gains nothing; min(K, 10) on CUDA)."""
    if pack is None:
        return min(num_clients, AUTO_PACK_CUDA) if device.type == "cuda" else 1
    if pack < 0:
        raise BenchError(f"pack must be 0 (off), 1 (off) or a number of clients, not {pack}")
    return max(1, min(pack, num_clients))


class _ClientView(Mapping):
    """One client's trainable tensors as a mapping of differentiable slices (built on access)."""

    def __init__(self, stacked: dict[str, Tensor], k: int) -> None:
        self._stacked, self._k = stacked, k

    def __getitem__(self, key: str) -> Tensor:
        return self._stacked[key][self._k]

    def __iter__(self):
        return iter(self._stacked)

    def __len__(self) -> int:
        return len(self._stacked)


class _Packed:
    """Per-step state read by the packed forwards: the stacked trainable tensors and the active count."""

    def __init__(self, stacked: dict[str, Tensor]) -> None:
        self.stacked = stacked
        self.active = 0


@contextmanager
def packed_forward(model: LoraViT, state: _Packed):
    """Give every LoRA layer and the head a forward that applies client ``i``'s tensors to rows
    ``[i*B, (i+1)*B)`` of the batch (B = rows / active clients)."""
    modules = dict(model.net.named_modules())
    patched = []
    scale = model.scale

    def lora_forward(mod, prefix):
        def forward(x: Tensor, *args, **kwargs) -> Tensor:
            m = state.active
            out = mod.base_layer(x, *args, **kwargs)
            a = state.stacked[f"{prefix}.lora_A"][:m]  # [m, r, in]
            b = state.stacked[f"{prefix}.lora_B"][:m]  # [m, out, r]
            xs = x.reshape(m, -1, x.shape[-1])  # [m, rows*tokens, in]: a client's rows are contiguous
            delta = torch.bmm(torch.bmm(xs, a.transpose(1, 2)), b.transpose(1, 2))  # [m, rows*tokens, out]
            return out + delta.reshape(out.shape) * scale

        return forward

    def head_forward(f: Tensor) -> Tensor:
        m = state.active
        w = state.stacked["head.weight"][:m]  # [m, C, D]
        bias = state.stacked["head.bias"][:m]  # [m, C]
        out = torch.baddbmm(bias.unsqueeze(1), f.reshape(m, -1, f.shape[-1]), w.transpose(1, 2))  # [m, B, C]
        return out.reshape(-1, out.shape[-1])

    try:
        for key in state.stacked:
            if key.endswith(".lora_A"):
                prefix = key[: -len(".lora_A")]
                mod = modules[prefix]
                mod.forward = lora_forward(mod, prefix)  # instance attribute shadows the class forward
                patched.append(mod)
        model.net.head.forward = head_forward
        patched.append(model.net.head)
        yield
    finally:
        for mod in patched:
            del mod.forward


def packed_local_train(
    model: LoraViT,
    start: Params | Sequence[Params],
    datas: Sequence[ImageSplit],
    transform: DeviceTransform,
    objective: LocalObjective | Sequence[LocalObjective],
    settings: LocalSettings,
    generators: Sequence[torch.Generator],
    num_classes: int,
    requires: Collection[Signal] = (),
    client_ids: Sequence[int] | None = None,
    frozen: Collection[str] = (),
    budgets: Sequence[int | None] | None = None,
) -> list[ClientResult]:
    """Train ``len(datas)`` clients from ``start`` together; results in the order of ``datas``.

    ``start`` is one Params for every client or one per client (in the order of ``datas``). Same
    contract as ``local_train`` for each client (see the module docstring for the equivalence); ``frozen``
    keys keep their start values exactly (no gradient, no update, no weight decay); ``budgets``: each
    client's local steps (``local_train``'s ``max_steps``; None = full epochs).
    """
    starts = [start] * len(datas) if isinstance(start, Mapping) else list(start)
    objectives = list(objective) if isinstance(objective, Sequence) else [objective] * len(datas)
    ids = list(client_ids) if client_ids is not None else list(range(len(datas)))
    device = next(iter(model.trainable.values())).device
    bsz = settings.batch_size
    budgets = list(budgets) if budgets is not None else [None] * len(datas)
    steps = [full_steps(len(d), settings) if b is None else b for d, b in zip(datas, budgets, strict=True)]
    order = sorted(range(len(datas)), key=lambda i: -steps[i])  # most steps first: active = a prefix
    k_all = len(order)
    keys = list(model.trainable)

    # One flat [K, P] buffer of parameters (and one of gradients); each key is a leaf view into it, whose
    # .grad is preset to the matching view of the gradient buffer so backward accumulates in place.
    sizes = [model.trainable[k].numel() for k in keys]
    total = sum(sizes)
    flat = torch.empty(k_all, total, device=device, dtype=torch.float32)
    grad = torch.zeros_like(flat)
    frozen_cols = torch.zeros(1, total, device=device, dtype=torch.bool)
    stacked: dict[str, Tensor] = {}
    offset = 0
    with torch.no_grad():
        for key, size in zip(keys, sizes, strict=True):
            shape = tuple(model.trainable[key].shape)
            flat[:, offset : offset + size] = torch.stack([starts[i][key].reshape(size).float() for i in order])
            leaf = flat[:, offset : offset + size].view(k_all, *shape).detach().requires_grad_(key not in frozen)
            if key in frozen:
                frozen_cols[:, offset : offset + size] = True
            else:
                leaf.grad = grad[:, offset : offset + size].view(k_all, *shape)
            stacked[key] = leaf
            offset += size
    exp_avg, exp_avg_sq = torch.zeros_like(flat), torch.zeros_like(flat)
    step_count = torch.zeros(k_all, 1, device=device, dtype=torch.float64)
    # active[s, i] = 1 while the i-th client (in pack order) still has steps: built once, indexed per step.
    max_steps = max(steps)
    active_mask = (torch.arange(max_steps)[:, None] < torch.tensor([steps[i] for i in order])[None, :]).float()
    active_mask = active_mask.to(device)[:, :, None]  # [S, K, 1]
    n_active = [sum(1 for i in order if steps[i] > s) for s in range(max_steps)]
    collectors = collectors_for(requires)
    watched = {k: leaf for k, leaf in stacked.items() if k not in frozen}
    states = [c.start(watched) for c in collectors]  # the same collectors as sequential training, K clients
    stepping = [(c, st) for c, st in zip(collectors, states, strict=True) if st is not None]
    grads = {k: leaf.grad for k, leaf in watched.items()}
    loss_sums = torch.zeros(k_all, device=device)

    schedules = [batch_schedule(datas[i], epochs_for(steps[i], len(datas[i]), bsz), bsz, generators[i]) for i in order]
    state = _Packed(stacked)
    lr, wd = settings.lr, settings.weight_decay
    model.train()
    with packed_forward(model, state):
        for s in range(max_steps):
            m = n_active[s]
            state.active = m
            xs, ys = [], []
            for j in range(m):
                index = next(schedules[j])
                data, gen = datas[order[j]], generators[order[j]]
                x = transform.train(data.images[index], gen)
                if x.shape[0] < bsz:  # a short last batch: pad rows that carry no loss
                    x = torch.cat([x, x.new_zeros(bsz - x.shape[0], *x.shape[1:])])
                xs.append(x)
                ys.append(data.labels[index])
            with autocast(device, settings.autocast_dtype):
                logits = model(torch.cat(xs))
            losses = [objectives[order[j]](logits[j * bsz : j * bsz + len(ys[j])], ys[j], _ClientView(stacked, j),
                                           starts[order[j]]) for j in range(m)]
            stacked_losses = torch.stack(losses)
            with warnings.catch_warnings():
                # Each leaf's .grad is a strided view of the flat gradient buffer, on purpose: autograd
                # still accumulates into it in place, it only warns that the layout is not dense.
                warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout")
                stacked_losses.sum().backward()
            with torch.no_grad():
                mask = active_mask[s]  # [K, 1]
                for c, st in stepping:
                    c.before_step(st, watched)
                _masked_adamw(flat, grad, exp_avg, exp_avg_sq, step_count, mask, lr, wd, frozen_cols)
                for c, st in stepping:
                    c.after_step(st, watched, grads, mask)
                grad.zero_()
                loss_sums[:m] += stacked_losses.detach()

    sums = loss_sums.tolist()  # the one read of the losses for the whole pack
    results: list[ClientResult | None] = [None] * k_all
    for j, i in enumerate(order):
        params = {k: stacked[k][j].detach().clone().to(model.trainable[k].dtype) for k in keys}
        results[i] = finish_client(model, params, datas[i], transform, settings, num_classes, requires, ids[i],
                                   sums[j], steps[i], list(zip(collectors, states, strict=True)), j, generators[i])
    for leaf in watched.values():
        leaf.grad = None
    return results  # type: ignore[return-value]


def _masked_adamw(p: Tensor, g: Tensor, m: Tensor, v: Tensor, step: Tensor, mask: Tensor, lr: float,
                  wd: float, frozen_cols: Tensor | None = None) -> None:
    """torch.optim.AdamW's update (decoupled weight decay, bias-corrected moments) on rows with mask 1;
    rows with mask 0, and columns marked in ``frozen_cols`` [1, P], keep parameters and moments exactly."""
    beta1, beta2 = BETAS
    step.add_(mask.double())
    t = step.clamp(min=1)  # inactive clients before their first step: any finite value (discarded)
    bc1 = (1 - beta1**t).float()
    bc2_sqrt = (1 - beta2**t).sqrt().float()
    keep = mask == 0 if frozen_cols is None else (mask == 0) | frozen_cols
    new_m = m.lerp(g, 1 - beta1)
    new_v = v.mul(beta2).addcmul_(g, g, value=1 - beta2)
    denom = new_v.sqrt().div_(bc2_sqrt).add_(EPS)
    upd = p.mul(1 - lr * wd).sub_(new_m.div(denom).mul_(lr / bc1))  # p.addcdiv_(m, denom, -lr / bc1)
    p.copy_(torch.where(keep, p, upd))
    m.copy_(torch.where(keep, m, new_m))
    v.copy_(torch.where(keep, v, new_v))


def train_in_packs(
    model: LoraViT,
    start: Params | Mapping[int, Params],
    clients: Mapping[int, ImageSplit],
    transform: DeviceTransform,
    objective: LocalObjective | Mapping[int, LocalObjective],
    settings: LocalSettings,
    generators: Mapping[int, torch.Generator],
    num_classes: int,
    requires: Collection[Signal],
    pack: int,
    frozen: Collection[str] = (),
    per_client: bool = False,
    budgets: Mapping[int, int] | None = None,
) -> dict[int, ClientResult]:
    """Client id -> result for every client of ``clients``, trained ``pack`` at a time (in id order).

    ``start``: one Params for all, or (``per_client``) client id -> that client's starting Params;
    ``objective``: one for all, or client id -> that client's own.
    ``budgets``: client id -> its local steps (absent = full epochs).
    """
    ids = list(clients)
    out: dict[int, ClientResult] = {}
    for begin in range(0, len(ids), pack):
        chunk = ids[begin : begin + pack]
        starts = [start[k] for k in chunk] if per_client else start
        objectives = [objective[k] for k in chunk] if isinstance(objective, Mapping) else objective
        results = packed_local_train(model, starts, [clients[k] for k in chunk], transform, objectives, settings,
                                     [generators[k] for k in chunk], num_classes, requires, client_ids=chunk,
                                     frozen=frozen, budgets=[(budgets or {}).get(k) for k in chunk])
        out.update(zip(chunk, results, strict=True))
    return out
