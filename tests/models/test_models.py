"""The LoRA ViT: trainable set, zero-B equivalence with the plain backbone, parameter swapping, weights."""

from __future__ import annotations

import os

import pytest
import torch

from livar_bench.errors import WeightsError
from livar_bench.models import TINY_BACKBONES, build_model, create_backbone

NAME = "livar_micro_vit"
DEPTH = TINY_BACKBONES[NAME]["depth"]
TARGETS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


@pytest.fixture(scope="module")
def lora():
    model, info = build_model(NAME, 5, rank=2, alpha=4.0, targets=TARGETS)
    return model, info


def _x(n: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_only_lora_factors_and_head_are_trainable(lora):
    model, _ = lora
    lora_keys = [k for k in model.trainable if ".lora_" in k]
    assert len(lora_keys) == 2 * len(TARGETS) * DEPTH  # A and B for 4 modules in every block
    assert {k for k in model.trainable if ".lora_" not in k} == {"head.weight", "head.bias"}
    for i in range(DEPTH):
        for t in TARGETS:
            assert f"blocks.{i}.{t}.lora_A" in model.trainable and f"blocks.{i}.{t}.lora_B" in model.trainable
    live = {id(p) for p in model.parameters() if p.requires_grad}
    assert live == {id(p) for p in model.trainable.values()}
    a = model.trainable["blocks.0.attn.qkv.lora_A"]
    b = model.trainable["blocks.0.attn.qkv.lora_B"]
    d = TINY_BACKBONES[NAME]["embed_dim"]
    assert a.shape == (2, d) and b.shape == (3 * d, 2)


def test_zero_b_gives_exactly_the_plain_backbone(lora):
    model, _ = lora
    plain = create_backbone(NAME, 5)  # same seeded tiny initialisation, no LoRA
    plain.eval()
    params = model.initial_params(torch.Generator().manual_seed(0))
    assert all(torch.count_nonzero(v) == 0 for k, v in params.items() if k.endswith("lora_B"))
    model.load_params(params)
    model.eval()
    with torch.no_grad():
        plain.head.weight.copy_(params["head.weight"])
        plain.head.bias.copy_(params["head.bias"])
        x = _x()
        ref_features = plain.forward_head(plain.forward_features(x), pre_logits=True)
        assert torch.allclose(model.features(x), ref_features, atol=1e-6)
        assert torch.allclose(model(x), plain(x), atol=1e-6)
        # A non-zero B must change the function (so the comparison above is not vacuous).
        params["blocks.0.attn.qkv.lora_B"] = torch.ones_like(params["blocks.0.attn.qkv.lora_B"])
        model.load_params(params)
        assert not torch.allclose(model.features(x), ref_features, atol=1e-4)


def test_lora_layer_adds_scaled_b_times_a(lora):
    model, _ = lora
    params = model.initial_params(torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    b = torch.randn(params["blocks.1.mlp.fc1.lora_B"].shape, generator=g)
    params["blocks.1.mlp.fc1.lora_B"] = b
    model.load_params(params)
    layer = model.net.blocks[1].mlp.fc1
    base = layer.base_layer
    x = torch.randn(4, base.in_features, generator=g)
    with torch.no_grad():
        expected = base(x) + (4.0 / 2) * x @ params["blocks.1.mlp.fc1.lora_A"].T @ b.T  # scale = alpha / r
        assert torch.allclose(layer(x), expected, atol=1e-5)
    assert model.scale == 2.0


def test_get_load_params_round_trip_in_place(lora):
    model, _ = lora
    ptrs = {k: p.data_ptr() for k, p in model.trainable.items()}
    params = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(i))
              for i, (k, v) in enumerate(model.trainable.items())}
    model.load_params(params)
    got = model.get_params()
    assert got.keys() == params.keys()
    assert all(torch.equal(got[k], params[k]) for k in params)
    assert {k: p.data_ptr() for k, p in model.trainable.items()} == ptrs  # copied in place, no realloc
    got["head.bias"].add_(1.0)  # a detached copy: editing it leaves the model alone
    assert torch.equal(model.trainable["head.bias"], params["head.bias"])
    with pytest.raises(ValueError, match="missing"):
        model.load_params({k: v for k, v in params.items() if k != "head.bias"})


def test_initial_params_are_seeded(lora):
    model, _ = lora
    a = model.initial_params(torch.Generator().manual_seed(5))
    b = model.initial_params(torch.Generator().manual_seed(5))
    c = model.initial_params(torch.Generator().manual_seed(6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])
    bound = 1 / TINY_BACKBONES[NAME]["embed_dim"] ** 0.5
    assert a["blocks.0.attn.qkv.lora_A"].abs().max() <= bound


def test_backbone_info(lora):
    _, info = lora
    assert info.input_size == 16 and info.feature_dim == 32
    assert info.mean == (0.5, 0.5, 0.5) and info.std == (0.5, 0.5, 0.5)


def _save_test_vit(tmp_path, suffix: str) -> tuple[str, torch.nn.Module]:
    import timm

    src = timm.create_model("test_vit", pretrained=False, num_classes=10)
    with torch.no_grad():  # make the saved weights recognisably different from a fresh init
        src.blocks[0].attn.qkv.weight.fill_(0.125)
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    path = tmp_path / f"test_vit{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return str(path), src


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_loads_into_timm_backbone(tmp_path, suffix):
    path, src = _save_test_vit(tmp_path, suffix)
    net = create_backbone("test_vit", 7, weights=path, image_size=32)
    assert torch.equal(net.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    assert torch.equal(net.blocks[3].mlp.fc2.weight, src.blocks[3].mlp.fc2.weight)
    assert net.head.weight.shape == (7, src.head.weight.shape[1])  # fresh head for our classes


def test_weights_file_loads_into_tiny_backbone(tmp_path):
    src = create_backbone(NAME, 5)
    with torch.no_grad():
        src.blocks[1].norm1.weight.fill_(3.0)
    path = tmp_path / "micro.pth"
    torch.save(src.state_dict(), path)
    net = create_backbone(NAME, 5, weights=str(path))
    assert torch.equal(net.blocks[1].norm1.weight, torch.full_like(net.blocks[1].norm1.weight, 3.0))


@pytest.mark.parametrize("backbone", ["test_vit", NAME])
@pytest.mark.parametrize("content", [None, b"not a checkpoint" * 8, "dir"])
def test_bad_weights_files_are_weights_errors(tmp_path, backbone, content):
    path = tmp_path / "w.pth"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError) as info:
        create_backbone(backbone, 3, weights=str(path))
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_weights_file_is_a_weights_error(tmp_path):
    path = tmp_path / "locked.pth"
    torch.save(create_backbone(NAME, 5).state_dict(), path)
    path.chmod(0)
    with pytest.raises(WeightsError, match="could not load"):
        create_backbone(NAME, 5, weights=str(path))


def test_weights_for_another_architecture_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(create_backbone("livar_tiny_vit", 5).state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit|could not load"):
        create_backbone(NAME, 5, weights=str(path))
    with pytest.raises(WeightsError, match="does not fit test_vit") as info:
        create_backbone("test_vit", 5, weights=str(path))
    message = str(info.value)  # the first keys with both shapes, and the backbone the file fits
    assert "patch_embed.proj.weight [64, 3, 8, 8] in file vs [64, 3, 16, 16] in model" in message
    assert "missing (blocks.4." in message and "--backbone livar_tiny_vit" in message and "\n" not in message


def test_pretrained_offline_fails_fast_with_instructions(monkeypatch):
    import socket

    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("the hub was contacted although HF_HUB_OFFLINE is set")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    with pytest.raises(WeightsError) as info:
        create_backbone("test_vit", 3, pretrained=True)
    assert "--weights" in str(info.value) and "huggingface" in str(info.value)


def test_head_starts_where_timm_initialises_it():
    """The head is drawn as timm's VisionTransformer draws a fresh head (``init_weights_vit_timm``:
    trunc-normal std 0.02, zero bias), from the same random stream once the LoRA A factors are drawn."""
    from timm.models.vision_transformer import init_weights_vit_timm

    model, _ = build_model("livar_micro_vit", 7, rank=2, alpha=2.0, pretrained=False)
    params = model.initial_params(torch.Generator().manual_seed(5))
    replay = torch.Generator().manual_seed(5)
    for key, p in model.trainable.items():  # the A factors come first and are uniform draws
        if key.endswith(".lora_A"):
            torch.rand(p.shape, generator=replay)
    with torch.random.fork_rng(devices=[]):
        head = torch.nn.Linear(model.feature_dim, 7)  # its constructor draws too: set the state after it
        torch.set_rng_state(replay.get_state())
        init_weights_vit_timm(head)
    assert torch.equal(params["head.weight"], head.weight.detach())
    assert torch.equal(params["head.bias"], torch.zeros(7)) and torch.equal(head.bias.detach(), torch.zeros(7))
    assert 0.01 < float(params["head.weight"].std()) < 0.03
