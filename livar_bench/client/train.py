"""Local training of one client on the shared model.

The shared ``LoraViT`` is loaded with the round's global trainable tensors, trained for a number of
local epochs with a fresh AdamW (as in the reference code), and read back as a ``ClientUpdate``.
Inside the step there is no host synchronisation: the loss sum and LIVAR's signals accumulate on the
device and are read once, after the client finishes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from livar_bench.client.collectors import Collector, collectors_for
from livar_bench.client.objectives import LocalObjective
from livar_bench.data.base import ImageSplit
from livar_bench.data.transforms import DeviceTransform
from livar_bench.errors import DivergedError
from livar_bench.models import LoraViT
from livar_bench.types import ClientUpdate, Params, Signal


@dataclass(frozen=True)
class LocalSettings:
    """Hyperparameters of local training, shared by every client of a run."""

    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.1
    autocast_dtype: torch.dtype | None = None  # torch.bfloat16 on CUDA, None = full fp32


@dataclass(frozen=True)
class ClientResult:
    """A client's update plus what the loop reports about its training."""

    update: ClientUpdate
    mean_loss: float
    images: int


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_optimizer(params: list[torch.nn.Parameter], settings: LocalSettings) -> torch.optim.Optimizer:
    fused = params[0].device.type == "cuda"
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, fused=fused)


def local_train(
    model: LoraViT,
    start: Params,
    data: ImageSplit,
    transform: DeviceTransform,
    objective: LocalObjective,
    settings: LocalSettings,
    generator: torch.Generator,
    num_classes: int,
    requires: Collection[Signal] = (),
    client_id: int = 0,
    frozen: Collection[str] = (),
    max_steps: int | None = None,
) -> ClientResult:
    """Train one client from ``start`` and return its update (params and the requested signals).

    Args:
        model: the shared model; its trainable tensors are overwritten.
        start: the client's starting tensors (also the anchor of proximal objectives).
        data: the client's training split, already on the model's device.
        generator: the only source of randomness (sample order and augmentation).
        frozen: trainable keys left exactly as in ``start`` (no gradient, no weight decay).
        max_steps: the client's local work in optimiser steps (system heterogeneity: ``client/system.py``);
            None = ``settings.epochs`` full epochs. Its batches are those of full training, cut short.
    """
    device = next(iter(model.trainable.values())).device
    model.load_params(start)
    model.train()
    keys = [k for k in model.trainable if k not in frozen]
    params = [model.trainable[k] for k in keys]
    optimizer = make_optimizer(params, settings)
    collectors = collectors_for(requires)
    stacked = {k: model.trainable[k].unsqueeze(0) for k in keys}  # collectors see a client axis of 1
    states = [c.start(stacked) for c in collectors]
    stepping = [(c, st) for c, st in zip(collectors, states, strict=True) if st is not None]
    loss_sum = torch.zeros((), device=device)
    for k in frozen:
        model.trainable[k].requires_grad_(False)
    try:
        loss_sum, steps = _steps(model, start, data, transform, objective, settings, generator, keys, optimizer,
                                 stacked, stepping, loss_sum, max_steps)
    finally:
        for k in frozen:
            model.trainable[k].requires_grad_(True)
    # float(loss_sum): the one read of the loss per client
    return finish_client(model, model.get_params(), data, transform, settings, num_classes, requires, client_id,
                         float(loss_sum), steps, list(zip(collectors, states, strict=True)), 0, generator)


def _steps(model: LoraViT, start: Params, data: ImageSplit, transform: DeviceTransform, objective: LocalObjective,
           settings: LocalSettings, generator: torch.Generator, keys: list[str], optimizer: torch.optim.Optimizer,
           stacked: dict[str, Tensor], stepping: list[tuple[Collector, Any]], loss_sum: Tensor,
           max_steps: int | None = None) -> tuple[Tensor, int]:
    """The local optimisation loop of one client: (summed loss on the device, steps taken)."""
    device = loss_sum.device
    steps = 0
    total = full_steps(len(data), settings) if max_steps is None else max_steps
    for index in batch_schedule(data, epochs_for(total, len(data), settings.batch_size), settings.batch_size,
                                generator):
        if steps == total:
            break
        x = transform.train(data.images[index], generator)
        y = data.labels[index]
        with autocast(device, settings.autocast_dtype):
            logits = model(x)
        loss = objective(logits, y, model.trainable, start)
        loss.backward()
        for c, st in stepping:
            c.before_step(st, stacked)
        optimizer.step()
        if stepping:
            grads = {k: model.trainable[k].grad.unsqueeze(0) for k in keys}
            for c, st in stepping:
                c.after_step(st, stacked, grads, None)
        optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach()
        steps += 1
    return loss_sum, steps


def full_steps(num_samples: int, settings: LocalSettings) -> int:
    """Optimiser steps of ``settings.epochs`` full epochs over ``num_samples`` samples."""
    return settings.epochs * -(-num_samples // settings.batch_size)


def epochs_for(steps: int, num_samples: int, batch_size: int) -> int:
    """Epochs of the batch schedule that ``steps`` steps reach into (the last one possibly cut)."""
    return max(1, -(-steps // -(-num_samples // batch_size)))


def images_seen(steps: int, num_samples: int, batch_size: int) -> int:
    """Training images in the first ``steps`` batches of a client's schedule (the last batch of each
    epoch is short when ``batch_size`` does not divide ``num_samples``)."""
    per_epoch = -(-num_samples // batch_size)
    return (steps // per_epoch) * num_samples + min((steps % per_epoch) * batch_size, num_samples)


def batch_schedule(data: ImageSplit, epochs: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """A client's batch indices: a fresh permutation per epoch from its own generator, drawn lazily so
    that the augmentation draws of earlier batches come first (shared by sequential and packed training,
    which is what makes the two give the same updates)."""
    n = len(data)
    device = data.labels.device
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator, device=generator.device).to(device)
        for begin in range(0, n, batch_size):
            yield order[begin : begin + batch_size]


def finish_client(model: LoraViT, params: Params, data: ImageSplit, transform: DeviceTransform,
                  settings: LocalSettings, num_classes: int, requires: Collection[Signal], client_id: int,
                  loss_sum: float, steps: int, collected: list[tuple[Collector, Any]], index: int,
                  generator: torch.Generator) -> ClientResult:
    """The end of a client's local training: loss check, each collector's payload for client ``index`` of
    its stack (end-of-client signals see the client's final ``params`` and its generator), and the
    ``ClientResult``."""
    mean_loss = loss_sum / max(steps, 1)
    if not torch.isfinite(torch.tensor(mean_loss)):
        raise DivergedError(
            f"client {client_id}: training loss is not finite ({mean_loss}); lower --lr or check the data"
        )
    end = EndOfClient(model, params, data, transform, settings, num_classes, generator)
    signals = {c.name: c.payload(state, index, end, requires) for c, state in collected}
    diagnostics = {k: v for c, state in collected for k, v in c.diagnostics(state, index).items()}
    update = ClientUpdate(
        client_id=client_id,
        num_samples=len(data),
        class_counts=torch.bincount(data.labels, minlength=num_classes).cpu(),
        params=params,
        signals=signals,
        diagnostics=diagnostics,
        num_steps=steps,
    )
    return ClientResult(update, mean_loss, images_seen(steps, len(data), settings.batch_size))


class EndOfClient:
    """``collectors.ClientEnd`` for one client under ``params`` (its final local ones, or the model of an
    extra client round): its features, computed once."""

    def __init__(self, model: LoraViT, params: Params, data: ImageSplit, transform: DeviceTransform,
                 settings: LocalSettings, num_classes: int, generator: torch.Generator) -> None:
        self.model, self.params, self.data, self.transform, self.settings = model, params, data, transform, settings
        self.num_classes = num_classes
        self.generator = generator
        self._features: tuple[Tensor, Tensor, Tensor] | None = None

    def final_model(self) -> tuple[LoraViT, ImageSplit, DeviceTransform, LocalSettings]:
        self.model.load_params(self.params)
        return self.model, self.data, self.transform, self.settings

    def features(self) -> tuple[Tensor, Tensor, Tensor]:
        if self._features is None:
            self.model.load_params(self.params)
            feats, logits = embed(self.model, self.data.images, self.transform, max(self.settings.batch_size, 256),
                                  self.settings.autocast_dtype)
            self._features = (feats, self.data.labels, logits.argmax(1) == self.data.labels)
        return self._features


@torch.no_grad()
def embed(model: LoraViT, images: Tensor, transform: DeviceTransform, batch_size: int,
          dtype: torch.dtype | None) -> tuple[Tensor, Tensor]:
    """(pre-logit features [N, D] in float32, logits [N, C]) of uint8 images with the eval transform."""
    model.eval()
    device = next(iter(model.trainable.values())).device
    feats, logits = [], []
    for begin in range(0, images.shape[0], batch_size):
        x = transform.eval(images[begin : begin + batch_size])
        with autocast(device, dtype):
            f = model.features(x)
            z = model.classify(f)
        feats.append(f.float())
        logits.append(z.float())
    return torch.cat(feats), torch.cat(logits)


@torch.no_grad()
def evaluate(model: LoraViT, params: Params, data: ImageSplit, transform: DeviceTransform, batch_size: int,
             dtype: torch.dtype | None) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of ``params`` on ``data``."""
    model.load_params(params)
    _, logits = embed(model, data.images, transform, batch_size, dtype)
    loss = torch.nn.functional.cross_entropy(logits, data.labels)
    acc = (logits.argmax(1) == data.labels).float().mean()
    return {"acc": float(acc), "loss": float(loss)}
