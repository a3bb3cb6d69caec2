"""Backbone factory: a timm ViT with PEFT LoRA adapters and a fresh classifier head.

One ``LoraViT`` is built per run and shared by every simulated client: the frozen backbone stays put,
and a client is only a small dictionary of LoRA factors and head tensors copied into the live
parameters in place (``load_params``). Canonical parameter keys are ``blocks.<i>.<module>.lora_A``,
``...lora_B``, ``head.weight`` and ``head.bias`` (see methods/base.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from livar_bench import backbones as bb
from livar_bench.backbones import TINY_BACKBONES, _cached_hub_file  # noqa: F401 - re-exported
from livar_bench.errors import BenchError, WeightsError
from livar_bench.ops.lora import init_lora_a
from livar_bench.types import Params

TINY_INIT_SEED = 0
# timm's VisionTransformer head initialisation (``init_weights_vit_timm`` on nn.Linear): weights from a
# normal with std 0.02 truncated to [-2, 2] (absolute bounds, timm's ``trunc_normal_`` defaults), bias 0.
HEAD_INIT_STD = 0.02
HEAD_INIT_BOUND = 2.0

WEIGHTS_HOW = (
    "Download the weights on a machine with internet access, e.g. "
    "`python -c \"import timm; timm.create_model('{name}', pretrained=True)\"` (cached under "
    "~/.cache/huggingface) or the model.safetensors file from {link}, "
    "then pass --weights PATH (or --no-pretrained for a randomly initialised backbone)."
)


def _how(name: str) -> str:
    """How to get ``name``'s weights offline, linking to its hub page (with the pretrained tag)."""
    return WEIGHTS_HOW.format(name=name, link=bb.hub_link(name))


@dataclass(frozen=True)
class BackboneInfo:
    """What the data pipeline needs to know about a backbone."""

    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int


def list_backbones(pattern: str = "vit_*") -> list[str]:
    import timm

    return sorted(TINY_BACKBONES) + timm.list_models(pattern, pretrained=True)


def _is_timm_model(name: str) -> bool:
    import timm

    return timm.is_model(name.split(".")[0]) or timm.is_model(name)


def create_backbone(
    name: str, num_classes: int, *, pretrained: bool = True, weights: str | None = None, image_size: int | None = None
) -> nn.Module:
    """A timm VisionTransformer with a fresh ``num_classes`` head.

    Weights: ``weights`` (a local file) wins; else timm's pretrained weights (hub or local HF cache);
    else random. Tiny backbones use a fixed seeded random initialisation.
    """
    import timm

    bb.check_image_size(name, image_size)
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
    kwargs: dict = {"num_classes": num_classes, "img_size": bb.effective_image_size(name, image_size)}
    if weights:
        path = _weights_path(weights, name)
        try:
            state = bb.read_state(path)
        except WeightsError:
            raise
        except Exception as err:  # noqa: BLE001 - torch/safetensors raise many types for bad files
            raise WeightsError(_load_failure(path, name, err)) from None
        with torch.device("meta"):  # shapes only: refuse what timm would silently adapt (patch size, extra keys)
            reference = timm.create_model(name, pretrained=False, **kwargs)
        missing, unexpected, mismatched = bb.misfit(state, reference)
        if missing or unexpected or mismatched:
            raise WeightsError(bb.describe_mismatch(path, name, reference, state))
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
    if bb.has_layerscale(model):
        bb.warn_random_layerscale(name)
    return model


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
    bb.sniff_weights(path)
    return path


def _load_failure(path: Path, name: str, err: Exception) -> str:
    """One line saying why a weights file could not be used."""
    detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if len(detail) > 160:
        detail = detail[:157] + "..."
    return (f"could not load weights file {path} into {name} ({type(err).__name__}: {detail}); check that it "
            f"is an intact state dict of this backbone ({bb.ACCEPTED_FORMATS})")


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
        state = {k: v for k, v in bb.read_state(path).items() if not k.startswith("head.")}
    except WeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - torch/safetensors raise many types for corrupt files
        raise WeightsError(_load_failure(path, name, err)) from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError:  # size mismatches
        raise WeightsError(bb.describe_mismatch(path, name, model, state)) from None
    if [k for k in missing if not k.startswith("head.")] or unexpected:
        raise WeightsError(bb.describe_mismatch(path, name, model, state))


def _canonical(name: str) -> str:
    """PEFT's ``blocks.0.attn.qkv.lora_A.default.weight`` -> ``blocks.0.attn.qkv.lora_A``."""
    return re.sub(r"\.(lora_[AB])\.default\.weight$", r".\1", name)


class LoraViT(nn.Module):
    """A frozen ViT with LoRA on the chosen linear layers of every block and a trainable head."""

    def __init__(self, backbone: nn.Module, rank: int, alpha: float, targets: Iterable[str]) -> None:
        super().__init__()
        from peft import LoraConfig, inject_adapter_in_model

        targets = tuple(targets)
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
        if not any(".lora_A" in k for k in self.trainable):
            raise BenchError(f"no LoRA targets matched {targets}; check --lora-targets")
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
    size = bb.effective_image_size(backbone, image_size)  # timm keeps its own default in pretrained_cfg
    mean = tuple(float(v) for v in cfg.get("mean", (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in cfg.get("std", (0.5, 0.5, 0.5)))
    model = LoraViT(net, rank, alpha, targets)
    return model, BackboneInfo(backbone, size, mean, std, model.feature_dim)
