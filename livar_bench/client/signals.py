"""Maths of the client signals (the collectors in ``client/collectors/`` call it): class statistics."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from livar_bench.types import ClassStats


def class_statistics(
    features: Tensor, labels: Tensor, correct: Tensor, num_classes: int, with_cov: bool = False
) -> ClassStats:
    """Per-class count, mean and unbiased per-dimension variance of ``features`` [N, D].

    ``correct`` [N] bool marks samples the client's model classifies correctly; the ``*_correct`` fields
    use only those. Classes with fewer than two samples get zero variance (undefined otherwise).
    Computed in float64 via one-hot matrix products (no Python loop over classes).
    """
    f = features.double()
    onehot = torch.nn.functional.one_hot(labels, num_classes).double()  # [N, C]

    def moments(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        w = onehot * mask.double()[:, None]
        n = w.sum(0)  # [C]
        s1 = w.T @ f  # [C, D]
        s2 = w.T @ (f * f)
        mean = s1 / n.clamp(min=1)[:, None]
        var = (s2 - n[:, None] * mean * mean) / (n - 1).clamp(min=1)[:, None]
        var = torch.where((n >= 2)[:, None], var.clamp(min=0), torch.zeros_like(var))
        return n.long(), mean, var

    count, mean, var = moments(torch.ones_like(correct))
    count_c, _, var_c = moments(correct)
    cov = None
    if with_cov:
        d = f.shape[1]
        cov = torch.zeros(num_classes, d, d, dtype=torch.float32, device=f.device)
        for c in torch.nonzero(count >= 2).flatten().tolist():  # one D x D product per held class
            centred = f[labels == c] - mean[c]  # [n_c, D]
            cov[c] = (centred.T @ centred / (count[c] - 1)).float()
    return ClassStats(count=count, mean=mean.float(), var=var.float(), count_correct=count_c,
                      var_correct=var_c.float(), cov=cov)


HEAD_MODULE = "head"  # key of the classifier head's input Gram matrix in the INPUT_GRAM payload


def lora_module_paths(trainable_keys) -> list[str]:
    """Module paths (``blocks.0.attn.qkv``) of the LoRA-adapted layers, from canonical trainable keys."""
    return [k[: -len(".lora_A")] for k in trainable_keys if k.endswith(".lora_A")]


@torch.no_grad()
def input_grams(model, images: Tensor, transform, batch_size: int, dtype) -> dict[str, Tensor]:
    """Per LoRA-adapted layer (and the head, key ``"head"``), G = X^T X summed over every input token of
    ``images`` [N, ...] uint8 under the model's current params (eval transform), [in, in] float32.

    RegMean's statistic (Jin et al., 2023, sec. 3.2): the sum, not the mean, so a client with more data
    weighs more. Accumulated in float64 on the device, one forward pass over the data.
    """
    from livar_bench.client.train import autocast

    model.eval()
    paths = lora_module_paths(model.trainable)
    device = next(iter(model.trainable.values())).device
    dims = {p: model.net.get_submodule(p).base_layer.in_features for p in paths}
    dims[HEAD_MODULE] = model.net.head.in_features
    sums = {p: torch.zeros(d, d, dtype=torch.float64, device=device) for p, d in dims.items()}

    def hook(path: str):
        def accumulate(module, args, output) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()  # [tokens, in]
            sums[path].addmm_(x.T, x)
        return accumulate

    handles = [model.net.get_submodule(p).register_forward_hook(hook(p)) for p in paths]
    handles.append(model.net.head.register_forward_hook(hook(HEAD_MODULE)))
    try:
        for begin in range(0, images.shape[0], batch_size):
            x = transform.eval(images[begin : begin + batch_size])
            with autocast(device, dtype):
                model.classify(model.features(x))
    finally:
        for h in handles:
            h.remove()
    return {p: g.float() for p, g in sums.items()}


FISHER_CHUNK = 32  # examples per vectorised per-example gradient call (bounds the memory of the chunk)


def diagonal_fisher(model, images: Tensor, transform, num_examples: int, generator: torch.Generator,
                    dtype) -> dict[str, Tensor]:
    """Diagonal Fisher information of every trainable tensor under the model's current params:

        F = (1 / M) sum_i (d/d theta log p(y_i | x_i))^2,   y_i ~ p(. | x_i)  (the model's own prediction)

    over M = min(N, ``num_examples``) training images chosen by a permutation from ``generator``, one
    label drawn per image from the model's predictive distribution (an unbiased estimate of the Fisher of
    Matena and Raffel, 2022, eq. 3, whose expectation over y it samples). The squared gradients are
    per example (``torch.func.vmap`` of ``grad``, in chunks): the squared gradient of a batch sum is a
    different quantity. Returns {trainable key: [*shape] float32}.
    """
    from torch.func import functional_call, grad, vmap

    from livar_bench.client.train import autocast

    model.eval()
    device = next(iter(model.trainable.values())).device
    keys = list(model.trainable)
    by_id = {id(p): name for name, p in model.net.named_parameters()}
    names = {k: by_id[id(model.trainable[k])] for k in keys}  # canonical key -> the network's own name
    n = images.shape[0]
    chosen = torch.randperm(n, generator=generator, device=generator.device)[: min(n, num_examples)].to(images.device)
    x = transform.eval(images[chosen])
    with torch.no_grad(), autocast(device, dtype):
        probs = torch.softmax(model.classify(model.features(x)).float(), dim=-1)
    labels = torch.multinomial(probs.to(generator.device), 1, generator=generator)[:, 0].to(device)
    onehot = torch.nn.functional.one_hot(labels, probs.shape[1]).float()
    params = {names[k]: model.trainable[k].detach() for k in keys}

    def log_likelihood(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        with autocast(device, dtype):
            logits = functional_call(model.net, p, (xi[None],))
        return (torch.log_softmax(logits.float(), dim=-1)[0] * yi).sum()

    per_example = vmap(grad(log_likelihood), in_dims=(None, 0, 0))
    total = {k: torch.zeros_like(model.trainable[k], dtype=torch.float32) for k in keys}
    for begin in range(0, x.shape[0], FISHER_CHUNK):
        with warnings.catch_warnings():  # vmap falls back to a loop for SDPA on CPU: slower, still exact
            warnings.filterwarnings("ignore", message="There is a performance drop")
            grads = per_example(params, x[begin : begin + FISHER_CHUNK], onehot[begin : begin + FISHER_CHUNK])
        for k in keys:
            total[k].add_(grads[names[k]].float().square().sum(0))
    m = max(int(chosen.numel()), 1)
    return {k: t / m for k, t in total.items()}
