"""What a backbone is: its patch and image size, where its weights come from and what they contain.

    default_image_size(name)    224 px (the paper's protocol) for timm ViTs; a tiny backbone's own size
    check_image_size(name, s)   refuse a size that is not a multiple of the patch size
    weights_identity(...)       sha256 (and timm pretrained tag) of the weights a run loads
    id_payload(spec)            what that adds to a run id (nothing for the tiny backbones / no weights)
    sniff_weights(path)         refuse a file that is not a state dict (ONNX, text, ...) in one line
    describe_mismatch(...)      first missing / unexpected / mismatched keys with shapes, and a hint
    families()                  the ViT families ``ls backbones`` lists

A weights file is hashed once per process per (path, size, mtime): a file of hundreds of MB is not
re-read for each run id.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sys
from pathlib import Path
from typing import Any

from livar_bench.errors import BenchError, WeightsError

PROTOCOL_IMAGE_SIZE = 224  # the paper's protocol: 224 px inputs for every dataset
ACCEPTED_FORMATS = ".safetensors, or a torch state dict saved with torch.save (.pth/.pt/.bin)"
_STATE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_SIZE_WORDS = {192: "tiny", 384: "small", 768: "base", 1024: "large", 1280: "huge", 1408: "giant", 1536: "giant"}


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

def sniff_weights(path: Path) -> None:
    """Refuse, in one line, a file that is not a safetensors file or a torch.save archive."""
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as err:
        raise WeightsError(f"cannot read weights file {path} ({err.strerror or err})") from None
    safetensors = len(head) > 8 and head[8:9] == b"{"
    torch_zip = head[:4] == b"PK\x03\x04"
    torch_pickle = head[:1] == b"\x80"
    suffix = path.suffix.lower()
    onnx = head[:1] == b"\x08" and b"\x12" in head[2:4]  # ir_version, then producer_name (protobuf)
    if suffix == ".onnx" or (onnx and not (safetensors or torch_zip or torch_pickle)):
        kind = "an ONNX model, not a state dict"
    elif suffix in (".h5", ".keras", ".pb", ".tflite"):
        kind = f"a {suffix} (TensorFlow/Keras) file, not a state dict"
    elif safetensors or torch_zip or torch_pickle or suffix in _STATE_SUFFIXES:
        return  # a state dict, or meant to be one (a damaged one fails to load with the loader's reason)
    else:
        kind = "neither a safetensors file nor a torch.save archive"
    raise WeightsError(f"weights file {path} is {kind}; accepted formats: {ACCEPTED_FORMATS}")


def read_state(path: Path) -> dict:
    """The tensors of a weights file (a checkpoint's ``state_dict``/``model`` entry when nested)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))

    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict_ema", "model_ema", "state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} holds a {type(state).__name__} that is not a state dict of "
                           f"tensors; accepted formats: {ACCEPTED_FORMATS}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _shape(t: Any) -> str:
    return "[" + ", ".join(str(d) for d in getattr(t, "shape", ())) + "]"


def looks_like(state: dict) -> str | None:
    """'a ViT with patch 14, width 384, 12 blocks, native 518 px (e.g. vit_small_patch14_dinov2...)'."""
    proj = state.get("patch_embed.proj.weight")
    if proj is None or getattr(proj, "dim", lambda: 0)() != 4:
        return None
    width, patch = int(proj.shape[0]), int(proj.shape[-1])
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    parts = [f"patch {patch}", f"width {width}", f"{depth} blocks"]
    pos = state.get("pos_embed")
    if pos is not None and pos.dim() == 3:
        tokens = int(pos.shape[1])
        for prefix in (1, 0, 5, 2):  # class token, none, class + 4 registers, class + distillation
            side = round((tokens - prefix) ** 0.5)
            if side > 0 and side * side == tokens - prefix:
                parts.append(f"native {side * patch} px")
                break
    names = [n for n, c in TINY_BACKBONES.items() if (c["embed_dim"], c["patch_size"], c["depth"]) == (width, patch, depth)]
    word = _SIZE_WORDS.get(width)
    if word:
        try:
            import timm
            import torch

            for candidate in timm.list_models(f"vit_{word}_patch{patch}_*")[:12]:
                with torch.device("meta"):  # shapes only
                    model = timm.create_model(candidate, pretrained=False, num_classes=0)
                if not any(misfit(state, model)):
                    names.append(candidate)
                if len(names) == 3:
                    break
        except Exception:  # noqa: BLE001 - suggestions are best effort
            pass
    hint = f" (e.g. --backbone {' or '.join(names)})" if names else ""
    return "a ViT with " + ", ".join(parts) + hint


def misfit(state: dict, model: Any) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, mismatched) keys between a state dict and ``model``, head excluded, after
    timm's own conversion (original checkpoint layouts, position-embedding resampling). A different
    patch size counts as a mismatch although timm would resample the patch kernel: that is another model."""
    try:
        from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

        converted = checkpoint_filter_fn(dict(state), model) if isinstance(model, VisionTransformer) else state
    except Exception:  # noqa: BLE001 - conversion fails on the very files that do not fit
        converted = state
    want = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    have = {k: v for k, v in converted.items() if not k.startswith("head.")}
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    mismatched = [k for k in want if k in have and tuple(have[k].shape) != tuple(want[k].shape)]
    kernel = "patch_embed.proj.weight"
    raw = state.get(kernel)
    if raw is not None and kernel in want and tuple(raw.shape) != tuple(want[kernel].shape) and kernel not in mismatched:
        mismatched.insert(0, kernel)
    return missing, unexpected, mismatched


def describe_mismatch(path: Path, name: str, model: Any, state: dict | None = None, limit: int = 3) -> str:
    """One line: the first missing, unexpected and mismatched keys (with the file's and the model's
    shapes) and what to do (the backbone the file looks like, the image size)."""
    state = read_state(path) if state is None else state
    missing, unexpected, mismatched = misfit(state, model)
    want = model.state_dict()
    bits = []
    if mismatched:
        shown = "; ".join(f"{k} {_shape(state.get(k))} in file vs {_shape(want[k])} in model" for k in mismatched[:limit])
        bits.append(f"{len(mismatched)} mismatched ({shown}{'; ...' if len(mismatched) > limit else ''})")
    if missing:
        shown = ", ".join(f"{k} {_shape(want[k])}" for k in missing[:limit])
        bits.append(f"{len(missing)} missing ({shown}{', ...' if len(missing) > limit else ''})")
    if unexpected:
        shown = ", ".join(f"{k} {_shape(state.get(k))}" for k in unexpected[:limit])
        bits.append(f"{len(unexpected)} unexpected ({shown}{', ...' if len(unexpected) > limit else ''})")
    what = looks_like(state)
    hint = f"; the file looks like {what}" if what else ""
    return (f"weights file {path} does not fit {name}: " + (", ".join(bits) or "keys and shapes agree")
            + hint + "; choose the backbone the file was saved from (and an --image-size that is a multiple of "
            "its patch size)")


# --- warnings -------------------------------------------------------------------------------------

_SAID: set[str] = set()


def notice(message: str) -> None:
    """Print ``warning: message`` on stderr, once per process."""
    if message not in _SAID:
        _SAID.add(message)
        print(f"warning: {message}", file=sys.stderr)


def has_layerscale(model: Any) -> bool:
    """Whether ``model`` scales its residual branches with LayerScale (timm's ``ls1``/``ls2``)."""
    try:
        from timm.layers import LayerScale
    except ImportError:  # pragma: no cover - very old timm
        return False
    return any(isinstance(m, LayerScale) for m in model.modules())


def warn_random_layerscale(name: str) -> None:
    notice(
        f"{name} is built with random weights (--no-pretrained) and LayerScale, which starts near zero "
        "(1e-5 for DINOv2): every block's output is then almost only its input, so the features hardly depend on "
        "the image and accuracy stays at or near chance. Such a run is an untrained-architecture floor, not a "
        "baseline for what pretraining brings; use --weights or the pretrained weights for that."
    )


# --- listing --------------------------------------------------------------------------------------

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
