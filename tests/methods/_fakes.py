"""Small deterministic client updates for method tests: no model, no training, just plausible tensors."""

from __future__ import annotations

import torch

from livar_bench.client.signals import class_statistics
from livar_bench.types import ClientUpdate, Params, RoundContext

MODULES = ("blocks.0.attn.qkv", "blocks.0.mlp.fc1")
NUM_CLASSES = 4
FEATURE_DIM = 6
RANK = 2
IN_DIM, OUT_DIM = 5, 7


def global_params(seed: int = 0, dtype: torch.dtype = torch.float32) -> Params:
    g = torch.Generator().manual_seed(seed)
    params: Params = {}
    for m in MODULES:
        params[f"{m}.lora_A"] = torch.randn(RANK, IN_DIM, generator=g)
        params[f"{m}.lora_B"] = torch.randn(OUT_DIM, RANK, generator=g) * 0.1
    params["head.weight"] = torch.randn(NUM_CLASSES, FEATURE_DIM, generator=g)
    params["head.bias"] = torch.randn(NUM_CLASSES, generator=g)
    return {k: v.to(dtype) for k, v in params.items()}


def make_update(client_id: int, base: Params, g: torch.Generator, counts: list[int]) -> ClientUpdate:
    """A client whose tensors are ``base`` plus noise and whose class stats come from real features."""
    params = {k: (v.float() + 0.3 * torch.randn(v.shape, generator=g)).to(v.dtype) for k, v in base.items()}
    labels = torch.repeat_interleave(torch.arange(NUM_CLASSES), torch.tensor(counts))
    centres = torch.eye(NUM_CLASSES, FEATURE_DIM) * 3
    features = centres[labels] + torch.randn(len(labels), FEATURE_DIM, generator=g) * (1 + client_id)
    correct = torch.rand(len(labels), generator=g) < 0.8
    stats = class_statistics(features, labels, correct, NUM_CLASSES, with_cov=True)
    signals = {k: torch.rand((), generator=g) * 10 for k in base if ".lora_" in k}
    # RegMean's input Gram matrices (from random inputs: positive definite) and diagonal Fisher estimates
    inputs = {m: torch.randn(12, IN_DIM, generator=g) for m in MODULES}
    inputs["head"] = features
    grams = {m: x.T @ x for m, x in inputs.items()}
    fisher = {k: torch.rand(v.shape, generator=g) for k, v in base.items()}
    return ClientUpdate(client_id=client_id, num_samples=int(sum(counts)), class_counts=torch.tensor(counts),
                        params=params, signals={"class_stats": stats, "lora_signal": signals, "input_gram": grams,
                                                "fisher": fisher},
                        num_steps=3 + 2 * client_id)  # unequal local work (FedNova reads it)


# Client 0 and 1 share class 1; nobody holds class 3 (its head row must survive unchanged where relevant).
COUNTS = ([6, 4, 0, 0], [0, 5, 7, 0], [3, 0, 4, 0])


def make_updates(seed: int = 0, dtype: torch.dtype = torch.float32, identical: bool = False) -> tuple[Params, list[ClientUpdate]]:
    base = global_params(seed, dtype)
    g = torch.Generator().manual_seed(seed + 100)
    if identical:
        one = make_update(0, base, g, [4, 4, 4, 3])  # every class held: LIVAR keeps unheld rows global
        updates = [ClientUpdate(k, one.num_samples, one.class_counts, one.params, one.signals,
                                num_steps=one.num_steps) for k in range(3)]
        return base, updates
    return base, [make_update(k, base, g, counts) for k, counts in enumerate(COUNTS)]


def context(seed: int = 0, lora_scale: float = 2.0, round_: int = 1) -> RoundContext:
    # a federation of the three clients of ``make_updates``, trained with lr 0.01 (SCAFFOLD's option II)
    return RoundContext(round=round_, num_rounds=3, num_classes=NUM_CLASSES, lora_scale=lora_scale,
                        generator=torch.Generator().manual_seed(seed), num_clients=len(COUNTS), local_lr=0.01)


def snapshot(params: Params, updates: list[ClientUpdate]) -> list[torch.Tensor]:
    """Clones of every tensor a method can see, to check that it mutates nothing."""
    out = [v.clone() for v in params.values()]
    for u in updates:
        out += [v.clone() for v in u.params.values()] + [u.class_counts.clone()]
        s = u.class_stats
        out += [t.clone() for t in (s.count, s.mean, s.var, s.count_correct, s.var_correct, s.cov)]
        out += [v.clone() for v in u.lora_signals.values()]
        out += [v.clone() for v in u.signals["input_gram"].values()] + [v.clone() for v in u.signals["fisher"].values()]
    return out
