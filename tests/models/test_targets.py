"""LoRA targets (issue 26): the layers a backbone's blocks offer, and ``--lora-targets`` checked against them
before any data is read (on a model built on the meta device) or, where that cannot be done, when the model
is built."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from livar_bench.config import make_spec
from livar_bench.errors import BenchError
from livar_bench.models import LoraViT, build_model
from livar_bench.models.targets import adaptable_modules, backbone_modules, targets_problem

VIT = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.mix = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 4))
        self.gate = nn.Linear(4, 4)


class _Net(nn.Module):
    """Blocks whose linear layers are not a timm ViT's: mix.0, mix.2, gate (and a LayerNorm, no LoRA)."""

    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 4)  # outside the blocks: not a target
        self.blocks = nn.Sequential(_Block(), _Block())
        self.head = nn.Linear(4, 2)


def test_adaptable_modules_are_the_linear_layers_inside_blocks_named_within_their_block():
    assert adaptable_modules(_Net()) == ("mix.0", "mix.2", "gate")
    assert backbone_modules("livar_micro_vit") == VIT  # built on the meta device
    assert backbone_modules("vit_small_patch14_dinov2") == VIT  # layer scales and norms are not linear
    assert backbone_modules("hf-hub:someone/model") is None  # would need the network: checked when built


@pytest.mark.parametrize(("targets", "needles"), [
    ((), ["--lora-targets '' names no layer", "livar_micro_vit's blocks: attn.qkv, attn.proj, mlp.fc1, mlp.fc2"]),
    (("nosuch",), ["--lora-targets nosuch:", "have no linear layer nosuch", "LoRA can go on attn.qkv, attn.proj"]),
    (("attn.qkv", "attn", "norm1"), ["have no linear layers attn, norm1"]),  # a sub-module, a LayerNorm
    (("qkv",), ["no linear layer qkv"]),  # named within the block: attn.qkv
    (("attn.qkv", "attn.qkv"), ["names attn.qkv twice"]),
])
def test_a_bad_target_list_is_refused_at_validation_naming_what_exists(targets, needles):
    with pytest.raises(BenchError) as info:
        make_spec({"backbone": "livar_micro_vit", "lora_targets": targets, "dataset": "synthetic"})
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    assert targets_problem(targets, VIT, "livar_micro_vit") == str(info.value)


def test_a_subset_of_the_layers_is_accepted_and_gets_lora_only_there():
    spec = make_spec({"backbone": "livar_micro_vit", "lora_targets": ("mlp.fc2", "attn.qkv")})
    model, _ = build_model(spec.backbone, 3, rank=2, alpha=2.0, targets=spec.lora_targets)
    adapted = {k.split(".", 2)[2].rsplit(".", 1)[0] for k in model.trainable if ".lora_" in k}
    assert adapted == {"attn.qkv", "mlp.fc2"}


def test_the_built_model_checks_targets_a_meta_build_could_not():
    # The default targets on blocks that lack them: refused with the names that exist, before PEFT.
    with pytest.raises(BenchError, match=r"have no linear layers attn.qkv, attn.proj, mlp.fc1, mlp.fc2; LoRA can "
                                         r"go on mix.0, mix.2, gate"):
        LoraViT(_Net(), 2, 2.0, VIT, name="mynet")
    model = LoraViT(_Net(), 2, 2.0, ("gate",), name="mynet")
    assert sorted(k for k in model.trainable if ".lora_" in k) == [
        "blocks.0.gate.lora_A", "blocks.0.gate.lora_B", "blocks.1.gate.lora_A", "blocks.1.gate.lora_B"]
    with torch.no_grad():
        assert model.net.blocks[0].gate(torch.ones(1, 4)).shape == (1, 4)
