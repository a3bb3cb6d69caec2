"""Which layers of a backbone can take LoRA, and the check of ``--lora-targets`` against them.

LoRA goes on linear layers inside the transformer blocks, named relative to their block (``attn.qkv``,
``mlp.fc1``, ...; ``LoraViT`` matches ``.*blocks.<i>.<target>``). A target that names no such layer (a
typo, a LayerNorm, a whole sub-module such as ``attn``) is refused with the names that would work, before
anything is built when the backbone can be built on the meta device, else when ``LoraViT`` is built.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from livar_bench.models.sizes import TINY_BACKBONES

_IN_BLOCK = re.compile(r".*blocks\.\d+\.(.+)")  # the pattern LoraViT gives PEFT, with any target


def adaptable_modules(net: object) -> tuple[str, ...]:
    """The linear layers of ``net``'s blocks, named relative to their block, in module order."""
    from torch import nn

    found: dict[str, None] = {}
    for name, module in net.named_modules():  # type: ignore[attr-defined]
        match = _IN_BLOCK.fullmatch(name)
        if match and isinstance(module, nn.Linear):  # LoRA factors are [r, in] and [out, r]: linear layers only
            found[match.group(1)] = None
    return tuple(found)


@functools.lru_cache(maxsize=64)
def backbone_modules(name: str) -> tuple[str, ...] | None:
    """``adaptable_modules`` of backbone ``name`` built on the meta device (no memory, no weights), or None
    when it cannot be built here without the network (a hub reference, an unknown name)."""
    if ":" in name or "/" in name:  # a hub reference: building it would fetch its config from the network
        return None
    try:
        import torch

        with torch.device("meta"):
            if name in TINY_BACKBONES:
                from timm.models.vision_transformer import VisionTransformer

                net = VisionTransformer(**TINY_BACKBONES[name])
            else:
                import timm

                net = timm.create_model(name.split(".")[0], pretrained=False)
    except Exception:  # noqa: BLE001 - not a timm model: the factory says so, with suggestions
        return None
    return adaptable_modules(net)


def targets_problem(targets: Sequence[str], available: Sequence[str], backbone: str) -> str | None:
    """What is wrong with LoRA ``targets`` on a backbone whose blocks hold ``available``, or None."""
    asked = ",".join(targets) or "''"
    if not available:
        return (f"{backbone} has no linear layers in blocks.<i> for LoRA (--lora-targets {asked}); "
                "use a ViT backbone (livar-bench ls backbones)")
    names = ", ".join(available)
    unknown = [t for t in dict.fromkeys(targets) if t not in available]
    twice = [t for t in dict.fromkeys(targets) if list(targets).count(t) > 1]
    if not targets:
        return (f"--lora-targets {asked} names no layer; LoRA can go on these linear layers of {backbone}'s "
                f"blocks: {names}; give one or more, comma-separated")
    if unknown:
        layers = f"layer {unknown[0]}" if len(unknown) == 1 else f"layers {', '.join(unknown)}"
        return (f"--lora-targets {asked}: {backbone}'s blocks have no linear {layers}; LoRA can go on {names}; "
                "give one or more of these, comma-separated")
    if twice:
        return f"--lora-targets {asked} names {', '.join(twice)} twice; give each layer once"
    return None


def check_targets(backbone: str, targets: Sequence[str]) -> str | None:
    """``targets_problem`` for backbone ``name`` before it is built; None when fine or not checkable here."""
    available = backbone_modules(backbone)
    return None if available is None else targets_problem(targets, available, backbone)
