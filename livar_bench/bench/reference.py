"""The reference-style path: what the LIVAR reference code does per step, written here as a yardstick.

fp32, a ``copy.deepcopy`` of the model per client and of its whole state dict per step, per-step
``.cpu()`` copies to compute the path-integral signal and read the loss, per-sample PNG decode + resize +
torchvision augmentation in one process, and dense merged weights on the server.
"""

from __future__ import annotations

import copy
import io

import torch
from torch import Tensor

from livar_bench.bench.settings import BenchSettings, Workload
from livar_bench.bench.timing import PhaseTimer, PhaseTimes
from livar_bench.client.signals import class_statistics
from livar_bench.data.base import ImageSplit
from livar_bench.data.transforms import DeviceTransform
from livar_bench.models import LoraViT
from livar_bench.types import Params, Signal

H100_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H100 SXM datasheet, dense BF16 tensor-core peak
# The reference computes LIVAR's path-integral signal and the class variances; both paths collect them.
BENCH_SIGNALS = frozenset({Signal.LORA_SIGNAL, Signal.CLASS_STATS})


def encode_png(split: ImageSplit) -> list[bytes]:
    """Each image as PNG bytes: the reference decodes image files every epoch."""
    from PIL import Image

    out = []
    for img in split.images.permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=1)
        out.append(buf.getvalue())
    return out


def reference_transforms(size: int, mean: tuple[float, ...], std: tuple[float, ...]):
    """Per-sample torchvision pipelines as in the reference: resize once per sample (bicubic), then
    RandomResizedCrop + flip for training, Resize(256/224) + CenterCrop for testing."""
    from torchvision import transforms as T

    bicubic = T.InterpolationMode.BICUBIC
    base = [T.Resize((size, size), interpolation=bicubic)]
    train = T.Compose([*base, T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    test = T.Compose([*base, T.Resize(int(round(size / 0.875))), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(mean, std)])
    return train, test


def _decode_batch(pngs: list[bytes], index: list[int], transform) -> Tensor:
    from PIL import Image

    return torch.stack([transform(Image.open(io.BytesIO(pngs[i])).convert("RGB")) for i in index])


def run_reference(model: LoraViT, start: Params, work: Workload, tf: DeviceTransform, settings: BenchSettings,
                  device: torch.device) -> PhaseTimes:
    """One round the way the reference code does it (see the module docstring)."""
    train_tf, test_tf = reference_transforms(tf.size, tf.mean, tf.std)
    client_pngs = [encode_png(c) for c in work.clients]  # the "image files" (not timed)
    test_pngs = encode_png(work.test)
    lora_keys = [k for k in model.trainable if ".lora_" in k]
    times = PhaseTimes()
    # torchvision's random transforms draw from the global RNG; fork it so the bench leaves it untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        with PhaseTimer(device) as t:
            client_models = []
            for k, pngs in enumerate(client_pngs):
                client_models.append(_reference_client(model, start, pngs, work.clients[k].labels, train_tf, test_tf,
                                                       lora_keys, settings, device))
        times.train_s, times.train_images = t.seconds, settings.epochs * sum(len(c) for c in work.clients)
        if t.peak_mib is not None:
            times.peak_mem_mib["train"] = t.peak_mib
        with PhaseTimer(device) as t:
            merged = _reference_aggregate(model, client_models, [len(c) for c in work.clients])
        times.aggregate_s = t.seconds
        if t.peak_mib is not None:
            times.peak_mem_mib["aggregate"] = t.peak_mib
        del client_models
        with PhaseTimer(device) as t:
            _reference_eval(merged, test_pngs, work.test.labels, test_tf, settings.eval_batch_size, device)
        times.eval_s, times.eval_images = t.seconds, len(work.test)
        if t.peak_mib is not None:
            times.peak_mem_mib["eval"] = t.peak_mib
    return times


def _reference_client(model: LoraViT, start: Params, pngs: list[bytes], labels: Tensor, train_tf, test_tf,
                      lora_keys: list[str], settings: BenchSettings, device: torch.device) -> LoraViT:
    local = copy.deepcopy(model)  # a full model copy per client
    local.load_params(start)
    local.train()
    params = [local.trainable[k] for k in local.trainable]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    signal = dict.fromkeys(lora_keys, 0.0)
    losses = []
    n = len(pngs)
    for _ in range(settings.epochs):
        order = torch.randperm(n).tolist()
        for begin in range(0, n, settings.batch_size):
            index = order[begin : begin + settings.batch_size]
            x = _decode_batch(pngs, index, train_tf).to(device)
            y = labels[index].to(device)
            loss = torch.nn.functional.cross_entropy(local(x), y)
            loss.backward()
            before = copy.deepcopy(local.state_dict())  # the reference snapshots the whole state every step
            before_lora = {k: local.trainable[k].detach().cpu().clone() for k in lora_keys}
            optimizer.step()
            for k in lora_keys:  # two blocking device-to-host copies per factor per step
                p = local.trainable[k]
                s = (p.grad.cpu() * (before_lora[k] - p.detach().cpu())).sum()
                signal[k] += abs(float(s))
            optimizer.zero_grad()
            losses.append(loss.item())
            del before
    # Class variances with the final local model: per-sample decode again, fp32, features to the host.
    local.eval()
    feats = []
    with torch.no_grad():
        for begin in range(0, n, 256):
            x = _decode_batch(pngs, list(range(begin, min(n, begin + 256))), test_tf).to(device)
            feats.append(local.features(x).cpu())
    f = torch.cat(feats)
    class_statistics(f, labels, torch.ones(n, dtype=torch.bool), settings.num_classes)
    return local


@torch.no_grad()
def _reference_aggregate(model: LoraViT, clients: list[LoraViT], sizes: list[int]) -> LoraViT:
    """Sample-weighted mean of A, B and head, plus the dense merged weights W0 + s * sum_k w_k B_k A_k that
    the reference evaluates (materialised per module)."""
    total = float(sum(sizes))
    weights = [n / total for n in sizes]
    merged = copy.deepcopy(model)
    avg = {k: sum(w * c.trainable[k].detach() for w, c in zip(weights, clients, strict=True)) for k in model.trainable}
    merged.load_params(avg)
    lora_modules = {name: mod for name, mod in merged.net.named_modules() if hasattr(mod, "lora_A") and hasattr(mod, "base_layer")}
    for name, mod in lora_modules.items():
        key = name  # canonical key prefix, e.g. blocks.0.attn.qkv
        delta = sum(w * (c.trainable[f"{key}.lora_B"] @ c.trainable[f"{key}.lora_A"]) for w, c in zip(weights, clients, strict=True))
        mod.base_layer.weight += merged.scale * delta
        merged.trainable[f"{key}.lora_B"].zero_()  # the merged delta now lives in the dense weight
    return merged


@torch.no_grad()
def _reference_eval(model: LoraViT, pngs: list[bytes], labels: Tensor, test_tf, batch_size: int,
                    device: torch.device) -> float:
    model.eval()
    correct = 0
    for begin in range(0, len(pngs), batch_size):
        index = list(range(begin, min(len(pngs), begin + batch_size)))
        logits = model(_decode_batch(pngs, index, test_tf).to(device)).cpu()
        correct += int((logits.argmax(1) == labels[index]).sum())
    return correct / max(len(pngs), 1)
