"""The identity of a backbone's weights: the sha256 of what a run loads (a file, or the timm hub cache), what
that adds to a run id, and the provenance recorded beside a run's spec.

A weights file is hashed once per process per (path, size, mtime): a file of hundreds of MB is not
re-read for each run id.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from livar_bench.models.sizes import (
    _cached_hub_file,
    _timm_cfg,
    _tiny,
    default_image_size,
    effective_image_size,
    timm_default_size,
)

_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's content, computed once per process per (path, size, mtime)."""
    p = Path(path).expanduser().resolve()
    stat = p.stat()
    key = (str(p), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def hub_source(name: str) -> tuple[str, str | None] | None:
    """(hf_hub_id with its tag, e.g. timm/vit_small_patch14_dinov2.lvd142m, tag) from timm's pretrained
    config, or None."""
    cfg = _timm_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    return (hub_id, getattr(cfg, "tag", None)) if hub_id else None


def hub_link(name: str) -> str:
    """The Hugging Face page of ``name``'s pretrained weights, built from timm's pretrained config."""
    source = hub_source(name)
    return f"https://huggingface.co/{source[0]}" if source else f"https://huggingface.co/models?search={name}"


def weights_identity(backbone: str, pretrained: bool, weights: str | None) -> dict[str, Any]:
    """What the run's backbone weights are: ``{}`` for the tiny backbones' seeded weights and for random
    timm weights; else ``weights_sha256`` and ``weights_source`` (file or hub-cache), plus
    ``pretrained_tag`` for the hub cache. Missing files give ``{}`` (they are refused elsewhere)."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            return {}
        return {"weights_sha256": file_sha256(path), "weights_source": "file"}
    if not pretrained or _tiny(backbone):
        return {}
    try:
        cached = _cached_hub_file(backbone)
    except Exception:  # noqa: BLE001 - a broken hub cache is not the run id's business
        cached = None
    if cached is None:
        return {}
    source = hub_source(backbone)
    return {"weights_sha256": file_sha256(cached), "weights_source": "hub-cache",
            "pretrained_tag": source[1] if source else None}


def id_payload(spec: Any) -> dict[str, Any]:
    """Changes to a run id's payload: the weights' content instead of their path, and the input size
    where an unset size now means something else than it used to (timm's default, e.g. 518 px)."""
    changes: dict[str, Any] = {}
    identity = weights_identity(spec.backbone, spec.pretrained, spec.weights)
    if "weights_sha256" in identity:
        if spec.weights:
            changes["weights"] = "sha256:" + identity["weights_sha256"]
        else:
            changes["pretrained_weights"] = {k: identity[k] for k in ("weights_sha256", "pretrained_tag")}
    if not spec.image_size and not _tiny(spec.backbone):
        legacy = timm_default_size(spec.backbone)
        if legacy is not None and legacy != default_image_size(spec.backbone):
            changes["image_size"] = default_image_size(spec.backbone)
    return changes


def provenance(spec: Any) -> dict[str, Any]:
    """Recorded beside the spec in spec.json and env.json: the weights' identity and the input size."""
    return {**weights_identity(spec.backbone, spec.pretrained, spec.weights),
            "input_size": effective_image_size(spec.backbone, spec.image_size)}


# --- loading problems -----------------------------------------------------------------------------
