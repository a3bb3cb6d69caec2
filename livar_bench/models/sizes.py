"""What timm knows of a backbone before it is built: its patch size, its default input size, and the
input size a run uses (224 px, the paper's protocol, unless ``--image-size`` says otherwise; a tiny
backbone's own size).
"""

from __future__ import annotations

import functools
import re
from typing import Any

from livar_bench.errors import BenchError

PROTOCOL_IMAGE_SIZE = 224  # the paper's protocol: 224 px inputs for every dataset


# Tiny ViTs for the offline demo and tests: random (seeded) weights, no download.
TINY_BACKBONES: dict[str, dict] = {
    "livar_tiny_vit": dict(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0),
    "livar_micro_vit": dict(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0),
}


def _tiny(name: str) -> dict | None:
    return TINY_BACKBONES.get(name)


def _cached_hub_file(name: str) -> str | None:
    """Path of ``name``'s pretrained weights in the local Hugging Face cache, if they are there."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except (RuntimeError, KeyError, ValueError):
        return None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return found
    return None


@functools.lru_cache(maxsize=64)
def _timm_cfg(name: str) -> Any:
    """timm's pretrained config of ``name`` (default tag), or None."""
    try:
        from timm.models import get_pretrained_cfg

        return get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - unknown names raise several types across timm versions
        return None


def timm_default_size(name: str) -> int | None:
    """The size timm builds ``name`` at (its pretrained config's), which an unset size used to mean."""
    cfg = _timm_cfg(name)
    return int(cfg.input_size[-1]) if cfg is not None and getattr(cfg, "input_size", None) else None


def default_image_size(name: str) -> int:
    """The input size used when none is given: a tiny backbone's own, else the protocol's 224 px."""
    tiny = _tiny(name)
    return int(tiny["img_size"]) if tiny else PROTOCOL_IMAGE_SIZE


def effective_image_size(name: str, image_size: int | None) -> int:
    return int(image_size) if image_size else default_image_size(name)


@functools.lru_cache(maxsize=64)
def patch_size(name: str) -> int | None:
    """The backbone's patch size: from its name (``..._patch14_...``), else from a model built on the
    meta device (no memory, no weights); None when unknown."""
    tiny = _tiny(name)
    if tiny:
        return int(tiny["patch_size"])
    match = re.search(r"patch(\d+)", name)
    if match:
        return int(match.group(1))
    stride = re.search(r"_r\d+_s(\d+)_", name)  # hybrid ResNet-ViTs: the CNN's stride is the patch
    if stride:
        return int(stride.group(1))
    if ":" in name or "/" in name:  # a hub reference: building it would fetch its config from the network
        return None
    try:
        import timm
        import torch

        with torch.device("meta"):
            model = timm.create_model(name.split(".")[0], pretrained=False)
        size = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    except Exception:  # noqa: BLE001 - not a timm model, or not a ViT
        return None
    return int(size[0] if isinstance(size, (tuple, list)) else size) if size else None


def check_image_size(name: str, image_size: int | None) -> None:
    """Refuse an input size that is not a whole number of patches (the border would be dropped silently)."""
    if not image_size:
        return
    patch = patch_size(name)
    if patch and image_size % patch:
        lower = max(patch, image_size // patch * patch)
        raise BenchError(
            f"image size {image_size} is not a multiple of {name}'s patch size {patch}; the border pixels would "
            f"be dropped. Use e.g. --image-size {lower} or {lower + patch}"
        )


def size_note(name: str, image_size: int | None) -> str:
    """One line saying which input size a run uses and where it comes from."""
    size = effective_image_size(name, image_size)
    if image_size:
        return f"image size {size} px (--image-size)"
    native = None if _tiny(name) else timm_default_size(name)
    extra = f"; timm's default for it is {native} px" if native and native != size else ""
    return f"image size {size} px (default for {name}{extra}; set --image-size to change it)"


# --- weights identity -----------------------------------------------------------------------------


def _is_timm_model(name: str) -> bool:
    import timm

    return timm.is_model(name.split(".")[0]) or timm.is_model(name)
