"""Shared steps of the merges that work on each LoRA module's dense update (product space).

A product-space merge reads every client's module update s_k B_k A_k [out, in] (its own LoRA scale s_k,
so clients of different ranks compare like with like), forms a new dense update per module and returns
to rank-r factors of the global scale s by truncated SVD (``ops.lora.to_factors``, singular values split
evenly, unless the method says otherwise). Tensors that are not LoRA factors (the classifier head) are
the sample-weighted mean (FedAvg) in every method that uses these helpers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from livar_bench.ops.lora import factor_keys, is_lora_key, lora_delta, lora_modules, to_factors
from livar_bench.ops.weighted import sample_weights, weighted_average_params
from livar_bench.types import ClientUpdate, Params, RoundContext, client_scale


def by_client(updates: Sequence[ClientUpdate]) -> list[ClientUpdate]:
    """Updates in client-id order, so that per-client random draws do not depend on arrival order."""
    return sorted(updates, key=lambda u: u.client_id)


def client_products(updates: Sequence[ClientUpdate], module: str, ctx: RoundContext) -> Tensor:
    """[K, out, in] float64: every client's dense update s_k B_k A_k of ``module``."""
    a_key, b_key = factor_keys(module)
    return torch.stack([lora_delta(u.params[b_key], u.params[a_key], client_scale(u, ctx)).double() for u in updates])


def global_product(params: Params, module: str, ctx: RoundContext) -> Tensor:
    """[out, in] float64: the global model's dense update s B A of ``module``."""
    a_key, b_key = factor_keys(module)
    return lora_delta(params[b_key], params[a_key], ctx.lora_scale).double()


def task_matrices(params: Params, updates: Sequence[ClientUpdate], module: str,
                  ctx: RoundContext) -> tuple[Tensor, Tensor]:
    """(start [out, in], task matrices [K, out, in]): the global update and each client's change of it."""
    start = global_product(params, module, ctx)
    return start, client_products(updates, module, ctx) - start


def fedavg_rest(params: Params, updates: Sequence[ClientUpdate]) -> Params:
    """Sample-weighted mean of every tensor that is not a LoRA factor (the head)."""
    rest = [k for k in params if not is_lora_key(k)]
    if not rest:
        return {}
    return weighted_average_params([u.params for u in updates], sample_weights([u.num_samples for u in updates]),
                                   keys=rest)


def assemble(params: Params, dense: dict[str, Tensor], rest: Params, ctx: RoundContext) -> Params:
    """The new global params: each module's dense target truncated to the global rank, the rest as given,
    in ``params``' key order, dtypes and devices."""
    out = dict(rest)
    out.update(to_factors(dense, params, ctx.lora_scale))
    return {k: out[k].to(device=v.device, dtype=v.dtype) for k, v in params.items()}


def modules(params: Params) -> list[str]:
    """The LoRA modules of ``params`` (both factors present)."""
    return lora_modules(params)
