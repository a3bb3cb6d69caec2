"""Backbones and the LoRA model.

    sizes       patch and input sizes (224 px, the paper's protocol, unless --image-size), tiny backbones
    identity    the sha256 of the weights a run loads, what it adds to a run id, provenance
    loading     loading a weights file, and every way that fails, in one line each
    catalogue   the ViT families ``ls backbones`` lists, ``ls backbones --check``
    factory     ``build_model``: the backbone with its weights, wrapped as a ``LoraViT``
    lora_vit    ``LoraViT``: the frozen ViT with PEFT LoRA adapters and a trainable head
"""

from livar_bench.models.factory import TINY_INIT_SEED, BackboneInfo, build_model, create_backbone
from livar_bench.models.lora_vit import HEAD_INIT_BOUND, HEAD_INIT_STD, LoraViT, timm_head_weight
from livar_bench.models.sizes import TINY_BACKBONES

__all__ = [
    "HEAD_INIT_BOUND", "HEAD_INIT_STD", "TINY_BACKBONES", "TINY_INIT_SEED", "BackboneInfo", "LoraViT", "build_model",
    "create_backbone", "timm_head_weight",
]
