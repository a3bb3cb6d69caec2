"""FedEx-LoRA (Singhal, Ponkshe, Vepakomma, ACL 2025, arXiv 2410.09432): exact aggregation of LoRA updates.

A and B are averaged as FedAvg does (sample weights w_k), and the error that this makes, per adapted
module,

    residual = sum_k w_k s_k B_k A_k - s (sum_k w_k B_k)(sum_k w_k A_k)      (s = LoRA scale)

is added to the frozen base weight. The global model is then exactly the weighted average of the
clients' models: W0 + base_delta + s B A = (previous base) + sum_k w_k s_k B_k A_k. The residuals
accumulate over rounds in ``ServerState.base_deltas`` (checkpointed, applied to the backbone for
training and evaluation, and downloaded by clients: a dense [out, in] tensor per module, counted in
``download_bytes_per_client``).

``weights``: ``"samples"`` (default) w_k = n_k / N, as FedAvg and every other method of the harness, so that
a comparison isolates the aggregation rule; ``"uniform"`` w_k = 1/K for A, B, the head and the products, as
the paper's equations and the authors' code (``fed_agg.py``, ``aggregate_models_ours``: plain means) do.
The authors' code adds the residual to ``base_layer.weight`` transposed; for ``nn.Linear`` (weight
[out, in], like B A) that is wrong, silently so for square layers; this project adds it untransposed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, ClassVar, Literal

from pydantic import Field
from torch import Tensor

from livar_bench.methods.base import Aggregator
from livar_bench.methods.describe import describe
from livar_bench.ops.lora import factor_keys, lora_delta, lora_modules, weighted_product
from livar_bench.ops.weighted import client_weights, weighted_average_params
from livar_bench.types import ClientUpdate, RoundContext, ServerState, client_scale


def exact_residuals(state: ServerState, params: dict, updates: Sequence[ClientUpdate], weights: Tensor,
                    ctx: RoundContext) -> dict:
    """state.base_deltas plus, per module m, sum_k w_km s_k B_k A_k - s B_m A_m for the new factors in
    ``params``. ``weights``: [K] (the same for every module) or [K, M] (per module, in ``lora_modules`` order).

    Shared by FedEx-LoRA, FLoRA (whose new B is zero, so the residual is the whole weighted product) and
    LIVAR-Exact (LIVAR's per-module weights)."""
    deltas = dict(state.base_deltas)
    scales = [client_scale(u, ctx) for u in updates]
    for m, module in enumerate(lora_modules(state.params)):
        a_key, b_key = factor_keys(module)
        column = weights if weights.dim() == 1 else weights[:, m]
        exact = weighted_product([u.params[b_key] for u in updates], [u.params[a_key] for u in updates],
                                 column.tolist(), scales)
        residual = exact - lora_delta(params[b_key], params[a_key], ctx.lora_scale)
        deltas[module] = deltas[module] + residual if module in deltas else residual
    return deltas


@describe("fedex_lora", paper="https://arxiv.org/abs/2410.09432", label="FedEx-LoRA", order=70,
          summary="FedAvg of A, B plus the exact-aggregation residual folded into the base weights.")
class FedExLora(Aggregator):
    """FedAvg of A, B and head, plus the exact-aggregation residual folded into the base weights."""

    moves_base_weights: ClassVar[bool] = True

    weights: Annotated[Literal["samples", "uniform"], Field(
        description="client weights of every mean: n_k/N (samples, FedAvg's) or 1/K (uniform, the paper and "
                    "the authors' code)")] = "samples"

    def secure_aggregation(self) -> tuple[str, str]:
        return "individual", "its residual needs the products B_k A_k of each client's factors"

    def server_step(self, state: ServerState, updates: Sequence[ClientUpdate], ctx: RoundContext) -> ServerState:
        weights = client_weights([u.num_samples for u in updates], self.weights)
        params = weighted_average_params([u.params for u in updates], weights, keys=state.params)
        deltas = exact_residuals(state, params, updates, weights, ctx)
        return state.evolve(params=params, base_deltas=deltas)
