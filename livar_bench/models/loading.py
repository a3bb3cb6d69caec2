"""Loading weights into a backbone, and every way that can fail, in one line each.

    sniff_weights(path)         refuse a file that is not a state dict (ONNX, text, ...) in one line
    describe_mismatch(...)      first missing / unexpected / mismatched keys with shapes, and a hint
    weights_problem(...)        why the weights cannot be had, checked before anything is built
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from torch import nn

from livar_bench.errors import WeightsError
from livar_bench.models.identity import hub_link
from livar_bench.models.sizes import (
    TINY_BACKBONES,
    _cached_hub_file,
    _is_timm_model,
)

ACCEPTED_FORMATS = ".safetensors, or a torch state dict saved with torch.save (.pth/.pt/.bin)"
_STATE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_SIZE_WORDS = {192: "tiny", 384: "small", 768: "base", 1024: "large", 1280: "huge", 1408: "giant", 1536: "giant"}


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


WEIGHTS_HOW = (
    "Download the weights on a machine with internet access, e.g. "
    "`python -c \"import timm; timm.create_model('{name}', pretrained=True)\"` (cached under "
    "~/.cache/huggingface) or the model.safetensors file from {link}, "
    "then pass --weights PATH (or --no-pretrained for a randomly initialised backbone)."
)


def _how(name: str) -> str:
    """How to get ``name``'s weights offline, linking to its hub page (with the pretrained tag)."""
    return WEIGHTS_HOW.format(name=name, link=hub_link(name))


def weights_problem(name: str, *, pretrained: bool = True, weights: str | None = None) -> str | None:
    """Why ``create_backbone`` would fail to get this backbone's weights, checked without building it.

    Lets a sweep refuse at once, before any training, instead of failing at its first run.
    """
    try:
        if weights:
            _weights_path(weights, name)
            return None
        if name in TINY_BACKBONES or not pretrained:
            return None if name in TINY_BACKBONES or _is_timm_model(name) else f"unknown backbone {name!r}"
        if not _is_timm_model(name):
            return f"unknown backbone {name!r}; see `livar-bench ls backbones`"
        if _cached_hub_file(name) is None and _hub_unreachable() is not None:
            return (f"pretrained weights for {name} are not in the local Hugging Face cache and the hub cannot "
                    "be reached. " + _how(name))
    except WeightsError as err:
        return str(err)
    return None


def _weights_path(weights: str, name: str) -> Path:
    """The ``--weights`` path, checked to be an existing file."""
    path = Path(weights).expanduser()
    if not path.exists():
        raise WeightsError(f"weights file {path} does not exist. " + _how(name))
    if not path.is_file():
        raise WeightsError(f"--weights {path} is not a file; pass the .safetensors/.pth file itself")
    sniff_weights(path)
    return path


def _load_failure(path: Path, name: str, err: Exception) -> str:
    """One line saying why a weights file could not be used."""
    detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if len(detail) > 160:
        detail = detail[:157] + "..."
    return (f"could not load weights file {path} into {name} ({type(err).__name__}: {detail}); check that it "
            f"is an intact state dict of this backbone ({ACCEPTED_FORMATS})")


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """The hub's host name if it cannot be reached now (or HF_HUB_OFFLINE is set), else None."""
    import os
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    # Read the variable now: huggingface_hub reads it only once, at import.
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return host
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a direct connection says nothing when traffic must go through a proxy
    try:
        socket.create_connection((host, url.port or 443), timeout=timeout).close()
    except OSError:
        return host
    return None


def _load_state_file(model: nn.Module, weights: str, name: str) -> None:
    path = _weights_path(weights, name)
    try:
        state = {k: v for k, v in read_state(path).items() if not k.startswith("head.")}
    except WeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - torch/safetensors raise many types for corrupt files
        raise WeightsError(_load_failure(path, name, err)) from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError:  # size mismatches
        raise WeightsError(describe_mismatch(path, name, model, state)) from None
    if [k for k in missing if not k.startswith("head.")] or unexpected:
        raise WeightsError(describe_mismatch(path, name, model, state))
