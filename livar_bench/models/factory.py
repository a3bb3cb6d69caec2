"""The backbone factory: a timm ViT (or a tiny seeded one) with its weights, wrapped as a ``LoraViT``.

``build_model`` is what a run calls: it builds the backbone (``create_backbone``: a local weights file
wins, else timm's pretrained weights from the hub or its local cache, else random), puts LoRA on it and
says what inputs it expects (``BackboneInfo``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from livar_bench.errors import BenchError, WeightsError
from livar_bench.models.catalogue import list_backbones
from livar_bench.models.loading import (
    _how,
    _hub_unreachable,
    _load_failure,
    _load_state_file,
    _weights_path,
    describe_mismatch,
    has_layerscale,
    misfit,
    read_state,
    warn_random_layerscale,
)
from livar_bench.models.lora_vit import LoraViT
from livar_bench.models.sizes import (
    TINY_BACKBONES,
    _cached_hub_file,
    _is_timm_model,
    check_image_size,
    effective_image_size,
)

TINY_INIT_SEED = 0


@dataclass(frozen=True)
class BackboneInfo:
    """What the data pipeline needs to know about a backbone."""

    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int


def create_backbone(
    name: str, num_classes: int, *, pretrained: bool = True, weights: str | None = None, image_size: int | None = None
) -> nn.Module:
    """A timm VisionTransformer with a fresh ``num_classes`` head.

    Weights: ``weights`` (a local file) wins; else timm's pretrained weights (hub or local HF cache);
    else random. Tiny backbones use a fixed seeded random initialisation.
    """
    import timm

    check_image_size(name, image_size)
    if name in TINY_BACKBONES:
        cfg = dict(TINY_BACKBONES[name])
        if image_size:
            cfg["img_size"] = image_size
        from timm.models.vision_transformer import VisionTransformer

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_INIT_SEED)
            model = VisionTransformer(num_classes=num_classes, **cfg)
        model.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "input_size": (3, cfg["img_size"], cfg["img_size"])}
        if weights:
            _load_state_file(model, weights, name)
        return model
    if not _is_timm_model(name):
        import difflib

        close = difflib.get_close_matches(name, list_backbones("vit_*") + timm.list_models("vit_*"), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise BenchError(f"unknown backbone {name!r}.{hint} See `livar-bench ls backbones`.")
    kwargs: dict = {"num_classes": num_classes, "img_size": effective_image_size(name, image_size)}
    if weights:
        path = _weights_path(weights, name)
        try:
            state = read_state(path)
        except WeightsError:
            raise
        except Exception as err:  # noqa: BLE001 - torch/safetensors raise many types for bad files
            raise WeightsError(_load_failure(path, name, err)) from None
        with torch.device("meta"):  # shapes only: refuse what timm would silently adapt (patch size, extra keys)
            reference = timm.create_model(name, pretrained=False, **kwargs)
        missing, unexpected, mismatched = misfit(state, reference)
        if missing or unexpected or mismatched:
            raise WeightsError(describe_mismatch(path, name, reference, state))
        try:
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"state_dict": state}, **kwargs)
        except Exception as err:  # noqa: BLE001 - timm raises many types for files that do not fit
            raise WeightsError(_load_failure(path, name, err)) from None
    if pretrained:
        cached = _cached_hub_file(name)
        if cached is not None:  # load from the local HF cache without touching the network
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached}, **kwargs)
        host = _hub_unreachable()
        if host is not None:  # fail now rather than after the hub client's ~45 s of retries
            raise WeightsError(
                f"pretrained weights for {name} are not in the local Hugging Face cache and {host} cannot "
                "be reached (offline). " + _how(name)
            )
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as err:  # noqa: BLE001 - the hub client raises many unrelated types when offline
            raise WeightsError(
                f"pretrained weights for {name} are not available offline ({type(err).__name__}). "
                + _how(name)
            ) from None
    model = timm.create_model(name, pretrained=False, **kwargs)
    if has_layerscale(model):
        warn_random_layerscale(name)
    return model


def build_model(
    backbone: str,
    num_classes: int,
    *,
    rank: int = 16,
    alpha: float = 16.0,
    targets: Iterable[str] = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"),
    pretrained: bool = True,
    weights: str | None = None,
    image_size: int | None = None,
) -> tuple[LoraViT, BackboneInfo]:
    """Build the shared model and describe its expected inputs."""
    net = create_backbone(backbone, num_classes, pretrained=pretrained, weights=weights, image_size=image_size)
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    size = effective_image_size(backbone, image_size)  # timm keeps its own default in pretrained_cfg
    mean = tuple(float(v) for v in cfg.get("mean", (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in cfg.get("std", (0.5, 0.5, 0.5)))
    model = LoraViT(net, rank, alpha, targets, name=backbone)
    return model, BackboneInfo(backbone, size, mean, std, model.feature_dim)
