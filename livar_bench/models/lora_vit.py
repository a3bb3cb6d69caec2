"""``LoraViT``: a frozen timm ViT with PEFT LoRA adapters and a fresh classifier head.

One ``LoraViT`` is built per run and shared by every simulated client: the frozen backbone stays put,
and a client is only a small dictionary of LoRA factors and head tensors copied into the live
parameters in place (``load_params``). Canonical parameter keys are ``blocks.<i>.<module>.lora_A``,
``...lora_B``, ``head.weight`` and ``head.bias`` (see types.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from livar_bench.errors import BenchError
from livar_bench.ops.lora import init_lora_a
from livar_bench.types import Params

# timm's VisionTransformer head initialisation (``init_weights_vit_timm`` on nn.Linear): weights from a
# normal with std 0.02 truncated to [-2, 2] (absolute bounds, timm's ``trunc_normal_`` defaults), bias 0.
HEAD_INIT_STD = 0.02
HEAD_INIT_BOUND = 2.0


def _canonical(name: str) -> str:
    """PEFT's ``blocks.0.attn.qkv.lora_A.default.weight`` -> ``blocks.0.attn.qkv.lora_A``."""
    return re.sub(r"\.(lora_[AB])\.default\.weight$", r".\1", name)


class LoraViT(nn.Module):
    """A frozen ViT with LoRA on the chosen linear layers of every block and a trainable head."""

    def __init__(self, backbone: nn.Module, rank: int, alpha: float, targets: Iterable[str],
                 name: str = "the backbone") -> None:
        super().__init__()
        from peft import LoraConfig, inject_adapter_in_model

        from livar_bench.models.targets import adaptable_modules, targets_problem

        targets = tuple(targets)
        problem = targets_problem(targets, adaptable_modules(backbone), name)
        if problem:  # before PEFT, whose errors name its regular expression, not the layers that exist
            raise BenchError(problem)
        pattern = r".*blocks\.\d+\.(" + "|".join(re.escape(t) for t in targets) + r")"
        config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=pattern, lora_dropout=0.0, bias="none")
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.net = inject_adapter_in_model(config, backbone)
        self.rank = rank
        self.scale = alpha / rank
        self.trainable: dict[str, nn.Parameter] = {}
        for name, p in self.net.named_parameters():
            if "lora_" in name or name.startswith("head."):
                p.requires_grad_(True)
                self.trainable[_canonical(name)] = p
            else:
                p.requires_grad_(False)
        self.feature_dim = int(self.net.num_features)

    # --- client swapping ---------------------------------------------------------------------------
    def get_params(self) -> Params:
        """Detached copies of the trainable tensors."""
        return {k: p.detach().clone() for k, p in self.trainable.items()}

    @torch.no_grad()
    def load_params(self, params: Params) -> None:
        """Copy ``params`` into the live trainable tensors, in place (no new modules, no reallocation)."""
        if params.keys() != self.trainable.keys():
            missing = sorted(set(self.trainable) - set(params))[:3]
            extra = sorted(set(params) - set(self.trainable))[:3]
            raise ValueError(f"parameter keys differ from the model's: missing {missing}, extra {extra}")
        torch._foreach_copy_(list(self.trainable.values()), [params[k] for k in self.trainable])

    def initial_params(self, generator: torch.Generator) -> Params:
        """Seeded initial trainable tensors: LoRA A Kaiming-uniform (PEFT's default), B zero, and the head
        as timm's VisionTransformer initialises it (what ``timm.create_model(..., num_classes=C)`` gives
        the LIVAR reference code): weight trunc-normal std 0.02, bias zero. Drawn on the CPU so every
        device starts from the same numbers."""
        out: Params = {}
        for key, p in self.trainable.items():
            if key.endswith(".lora_B") or key == "head.bias":
                t = torch.zeros(p.shape)
            elif key == "head.weight":
                t = timm_head_weight(p.shape, generator)
            else:  # lora_A [r, in]
                t = init_lora_a(p.shape, generator)
            out[key] = t.to(device=p.device, dtype=p.dtype)
        return out

    @contextmanager
    def scaled(self, scale: float) -> Iterator[None]:
        """Use LoRA scale ``scale`` (alpha / r_k of a client with its own rank) for the duration."""
        layers = [m for m in self.net.modules() if isinstance(getattr(m, "scaling", None), dict) and "default" in m.scaling]
        saved, self_scale = [m.scaling["default"] for m in layers], self.scale
        for m in layers:
            m.scaling["default"] = scale
        self.scale = scale
        try:
            yield
        finally:
            for m, value in zip(layers, saved, strict=True):
                m.scaling["default"] = value
            self.scale = self_scale

    def check_rank(self) -> None:
        """Refuse a LoRA rank above the smaller dimension of an adapted layer (its update cannot use it)."""
        for name, module in self.net.named_modules():
            base = getattr(module, "base_layer", None)
            if base is not None and self.rank > min(base.in_features, base.out_features):
                raise BenchError(f"LoRA rank {self.rank} is larger than layer {name} allows ({base.out_features} x "
                                 f"{base.in_features}): use a rank of at most "
                                 f"{min(base.in_features, base.out_features)}")

    # --- forward -----------------------------------------------------------------------------------
    def features(self, x: Tensor) -> Tensor:
        """Pre-logit features: the CLS token after the final LayerNorm, [B, D]."""
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

    def classify(self, features: Tensor) -> Tensor:
        return self.net.head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.features(x))


def timm_head_weight(shape: torch.Size, generator: torch.Generator) -> Tensor:
    """A head weight drawn by timm's own ``trunc_normal_`` (std 0.02, bounds [-2, 2]), as
    ``init_weights_vit_timm`` draws it, with ``generator`` (CPU) standing in for the global RNG: the
    global state is swapped in for the call and the advanced state handed back to ``generator``."""
    from timm.layers import trunc_normal_

    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(generator.get_state())
        weight = trunc_normal_(torch.empty(shape), std=HEAD_INIT_STD, a=-HEAD_INIT_BOUND, b=HEAD_INIT_BOUND)
        generator.set_state(torch.get_rng_state())
    return weight
