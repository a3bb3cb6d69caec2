"""The catalogue of backbones: the ViT families ``ls backbones`` lists and ``ls backbones --check``.
"""

from __future__ import annotations

import re
from typing import Any

from livar_bench.errors import BenchError
from livar_bench.models.identity import hub_source
from livar_bench.models.loading import has_layerscale
from livar_bench.models.sizes import (
    PROTOCOL_IMAGE_SIZE,
    TINY_BACKBONES,
    _cached_hub_file,
    default_image_size,
    patch_size,
    timm_default_size,
)


def families(pattern: str = "vit_*") -> list[dict[str, Any]]:
    """timm's pretrained ViTs of its ``vision_transformer`` module (the VisionTransformer class, whose
    blocks have the attn.qkv / attn.proj / mlp.fc1 / mlp.fc2 layers LoRA is put on), grouped into families
    with the size word as ``*``: sizes, patch, timm's default input size, pretrained tags."""
    import timm

    groups: dict[str, dict[str, Any]] = {}
    for full in timm.list_models(pattern, module="vision_transformer", pretrained=True):
        arch = full.split(".")[0]
        match = re.match(r"^vit_([a-z0-9]+)_(.*)$", arch)
        size, rest = (match.group(1), match.group(2)) if match else ("", arch)
        family = f"vit_*_{rest}" if match else arch
        patch = re.search(r"patch(\d+)", arch)
        g = groups.setdefault(family, {"family": family, "sizes": [], "patch": int(patch.group(1)) if patch else None,
                                       "timm_size": timm_default_size(full), "tags": set(), "example": arch})
        if size and size not in g["sizes"]:
            g["sizes"].append(size)
        if "." in full:
            g["tags"].add(full.split(".", 1)[1])
    return [{**g, "tags": sorted(g["tags"]), "size": PROTOCOL_IMAGE_SIZE} for g in sorted(groups.values(), key=lambda g: (g["patch"] or 0, g["family"]))]


LORA_LAYERS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


def check_backbone(name: str) -> dict[str, Any]:
    """What livar-bench would build for ``name`` (built on the meta device: no memory, no weights).

    Raises:
        BenchError: an unknown name (with close matches), or a model without the layers LoRA goes on.
    """
    import timm
    import torch

    if name in TINY_BACKBONES:
        cfg = TINY_BACKBONES[name]
        return {"name": name, "patch": cfg["patch_size"], "default_size": cfg["img_size"], "timm_size": None,
                "hub": None, "cached": None, "layerscale": False, "note": "offline, seeded random weights"}
    arch = name.split(".")[0]
    if not timm.is_model(arch):
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models("vit_*"), n=3)
        raise BenchError(f"unknown backbone {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                         + " (`livar-bench ls backbones` lists the families)")
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False)
    blocks = getattr(model, "blocks", None)
    names = {n for n, _ in model.named_modules()}
    lacking = [t for t in LORA_LAYERS if f"blocks.0.{t}" not in names]
    if blocks is None or lacking:
        raise BenchError(f"{name} is a timm model but not a ViT with {', '.join(LORA_LAYERS)} in blocks.<i> "
                         f"(lacks {', '.join(lacking) or 'blocks'}); LoRA cannot be put on it")
    source = hub_source(name)
    return {"name": name, "patch": patch_size(arch), "default_size": default_image_size(name),
            "timm_size": timm_default_size(name), "hub": source[0] if source else None,
            "cached": _cached_hub_file(name) is not None, "layerscale": has_layerscale(model), "note": ""}


def list_backbones(pattern: str = "vit_*") -> list[str]:
    import timm

    return sorted(TINY_BACKBONES) + timm.list_models(pattern, pretrained=True)

