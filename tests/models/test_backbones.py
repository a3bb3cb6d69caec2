"""Backbones identified by content and sized by the protocol (issue 14): weights hash in run id, spec.json
and env.json; 224 px default and the patch-size check; LayerScale warning; weight-loading errors; hub link;
table keys; ls backbones; run --help defaults."""

from __future__ import annotations

import hashlib
import json
import os
import re

import pandas as pd
import pytest
import torch

from livar_bench import reporting as rp
from livar_bench.config import make_spec
from livar_bench.errors import BenchError, WeightsError
from livar_bench.federation import run_federation
from livar_bench.models import create_backbone, identity, loading, sizes
from tests._cli import invoke

MICRO = "livar_micro_vit"
QUICK = ["--dataset", "digits", "--backbone", MICRO, "--epochs", "1", "--max-train-samples", "120",
         "--max-test-samples", "60", "--lora-rank", "2", "--lora-alpha", "2", "--device", "cpu", "--batch-size", "32",
         "--clients", "3", "--rounds", "1"]


def user_error(code, err, out_dir) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    runs, partial = out_dir / "runs", out_dir / "runs" / ".partial"  # locks may stay; no run, no partial run
    assert not runs.is_dir() or not [p for p in runs.iterdir() if not p.name.startswith(".")]
    assert not partial.is_dir() or not list(partial.iterdir())
    return lines[0]


def micro_weights(path, fill: float | None = None):
    state = create_backbone(MICRO, 5).state_dict()
    if fill is not None:
        state["blocks.0.norm1.weight"] = torch.full_like(state["blocks.0.norm1.weight"], fill)
    torch.save(state, path)
    return str(path)


# --- 1. weights identified by content -------------------------------------------------------------

def test_file_hash_is_the_content_sha256_read_once_per_path_size_and_mtime(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 1000 + b"b" * 24)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert identity.file_sha256(path) == expected
    stat = path.stat()
    path.write_bytes(b"c" * 1024)  # same size; put the old mtime back: the cached hash is returned unread
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert identity.file_sha256(path) == expected
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new mtime: read again
    assert identity.file_sha256(path) == hashlib.sha256(b"c" * 1024).hexdigest()


def test_run_id_follows_the_weights_content_not_the_path(tmp_path):
    a = micro_weights(tmp_path / "a.pth", fill=2.0)
    copy = tmp_path / "elsewhere" / "b.pth"
    copy.parent.mkdir()
    copy.write_bytes((tmp_path / "a.pth").read_bytes())
    spec_a = make_spec({"backbone": MICRO, "weights": a})
    assert make_spec({"backbone": MICRO, "weights": str(copy)}).run_id == spec_a.run_id  # same content
    before = spec_a.run_id
    micro_weights(tmp_path / "a.pth", fill=3.0)  # replaced at the same path
    os.utime(tmp_path / "a.pth", ns=(0, 10**18))  # a distinct mtime even on coarse-clock file systems
    assert make_spec({"backbone": MICRO, "weights": a}).run_id != before
    assert make_spec({"backbone": MICRO}).run_id != before


def test_ids_of_specs_without_weights_or_size_change_are_unchanged():
    # ids computed by main before issue 14 (after issue 13's head_init): the tiny backbone, and a timm ViT whose timm default is 224
    assert make_spec({}).run_id == "14f687d1809f"
    assert make_spec({"backbone": "livar_tiny_vit", "image_size": 48}).run_id == "371bd8bbd1b1"
    assert make_spec({"backbone": "vit_base_patch16_224", "pretrained": False}).run_id == "8b60d4cd9292"
    assert identity.id_payload(make_spec({"backbone": MICRO})) == {}


def test_an_unset_size_is_224_for_dinov2_and_ids_say_so():
    unset = make_spec({"backbone": "vit_small_patch14_dinov2", "pretrained": False})
    explicit = make_spec({"backbone": "vit_small_patch14_dinov2", "pretrained": False, "image_size": 224})
    assert sizes.effective_image_size(unset.backbone, unset.image_size) == 224
    assert unset.run_id == explicit.run_id  # the same experiment now
    assert unset.run_id != "83465b057694"  # its id when unset meant timm's 518 px
    assert "518" in sizes.size_note(unset.backbone, None) and "224" in sizes.size_note(unset.backbone, None)


def test_spec_and_env_record_the_weights_hash_and_input_size(tmp_path, tiny_spec_values):
    path = micro_weights(tmp_path / "w.pth", fill=1.5)
    spec = make_spec({**tiny_spec_values, "rounds": 1, "weights": path})
    outcome = run_federation(spec, tmp_path / "out")
    expected = hashlib.sha256((tmp_path / "w.pth").read_bytes()).hexdigest()
    for name in ("spec.json", "env.json"):
        record = json.loads((outcome.run_dir / name).read_text())
        assert record["weights_sha256"] == expected and record["weights_source"] == "file"
        assert record["input_size"] == 16  # livar_micro_vit's own size


# --- 3. image size -------------------------------------------------------------------------------

def test_size_that_is_not_a_multiple_of_the_patch_is_refused():
    with pytest.raises(BenchError, match="not a multiple of .*patch size 14.*--image-size 28 or 42"):
        make_spec({"backbone": "vit_small_patch14_dinov2", "image_size": 40})
    with pytest.raises(BenchError, match="patch size 8"):
        make_spec({"backbone": MICRO, "image_size": 20})
    assert make_spec({"backbone": "vit_small_patch14_dinov2", "image_size": 42}).image_size == 42


def test_cli_refuses_a_bad_size_and_prints_the_size_in_use(tmp_path, monkeypatch, capsys):
    code, _, err = invoke(["run", *QUICK, "--image-size", "20", "--out", str(tmp_path)], monkeypatch, capsys)
    assert "multiple" in user_error(code, err, tmp_path)
    code, _, err = invoke(["run", *QUICK, "--out", str(tmp_path)], monkeypatch, capsys)
    assert code == 0, err
    assert f"{MICRO}: image size 16 px (default for {MICRO}" in err


# --- 4. LayerScale with random weights -----------------------------------------------------------

def test_random_layerscale_backbone_warns_once_and_others_do_not(capsys):
    loading._SAID.clear()
    create_backbone("test_vit", 3, pretrained=False, image_size=32)
    assert "warning" not in capsys.readouterr().err
    net = create_backbone("vit_small_patch14_dinov2", 3, pretrained=False, image_size=28)
    assert loading.has_layerscale(net)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "LayerScale" in err and "chance" in err and "floor" in err


# --- 5. weight-loading errors --------------------------------------------------------------------

@pytest.mark.parametrize("name,content", [("model.onnx", b"\x08\x07\x12\x07pytorch" * 4),
                                          ("weights.h5", b"\x89HDF\r\n\x1a\n" * 4),
                                          ("notes.txt", b"hello world, no tensors here")])
def test_files_that_are_not_state_dicts_get_one_line_naming_the_formats(tmp_path, monkeypatch, capsys, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    out = tmp_path / "out"
    code, _, err = invoke(["run", *QUICK, "--weights", str(path), "--out", str(out)], monkeypatch, capsys)
    line = user_error(code, err, out)
    assert str(path) in line and ".safetensors" in line and ".pth" in line
    if name.endswith(".onnx"):
        assert "ONNX" in line


def test_a_state_dict_of_another_backbone_names_keys_shapes_and_the_backbone_it_fits(tmp_path):
    path = micro_weights(tmp_path / "micro.pth")
    with pytest.raises(WeightsError) as info:
        create_backbone("livar_tiny_vit", 5, weights=path)
    line = str(info.value)
    assert "\n" not in line
    assert re.search(r"mismatched \(.*\[32, 3, 8, 8\] in file vs \[64, 3, 8, 8\] in model", line), line
    assert "missing (blocks.2." in line and "--backbone livar_micro_vit" in line


def test_a_state_dict_with_extra_keys_is_not_silently_adapted(tmp_path):
    import timm

    state = timm.create_model("test_vit", pretrained=False).state_dict()
    state["blocks.0.ls1.gamma"] = torch.ones(64)  # e.g. a LayerScale model's file
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"1 unexpected \(blocks.0.ls1.gamma \[64\]\)"):
        create_backbone("test_vit", 5, weights=str(path), image_size=32)


# --- 6. the offline link -------------------------------------------------------------------------

def test_offline_error_links_to_the_hub_id_with_its_pretrained_tag(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        create_backbone("vit_small_patch14_dinov2", 3, pretrained=True)
    assert "https://huggingface.co/timm/vit_small_patch14_dinov2.lvd142m" in str(info.value)


# --- 7. table keys -------------------------------------------------------------------------------

def _finals_and_settings():
    rows, specs = [], []
    for i, (pretrained, lr, seed, value) in enumerate([(True, 1e-3, 0, 0.9), (False, 1e-3, 0, 0.1),
                                                        (True, 1e-3, 1, 0.8), (False, 1e-3, 1, 0.3)]):
        run_id = f"r{i}"
        rows.append(dict(run_id=run_id, method="fedavg", dataset="digits", backbone="b", partition="dirichlet",
                         alpha=0.5, num_clients=4, seed=seed, partition_id=f"p{seed}", round=1, split="test",
                         metric="acc", value=value))
        specs.append(dict(run_id=run_id, method="fedavg", dataset="digits", pretrained=pretrained, lr=lr, seed=seed,
                          image_size=None, lora_targets=["attn.qkv"], weights_sha256="ab" * 32, device="cpu"))
    return pd.DataFrame(rows), pd.DataFrame(specs).set_index("run_id")


def test_table_accepts_every_differing_setting_as_a_key():
    finals, settings = _finals_and_settings()
    with pytest.raises(BenchError, match="differ in pretrained") as info:
        rp.make_pivot(finals, ["method"], ["dataset"], settings=settings)
    assert "--rows/--cols" in str(info.value)
    pivot = rp.make_pivot(finals, ["method"], ["dataset", "pretrained"], settings=settings)
    means = {col[1]: pivot.mean[col].iloc[0] for col in pivot.mean.columns}
    assert means == {True: pytest.approx(0.85), False: pytest.approx(0.2)}
    for key in ("lr", "image_size", "weights_hash", "lora_targets"):
        pivot = rp.make_pivot(finals, ["method", "pretrained"], [key], settings=settings)
        assert pivot.mean.shape == (2, 1)  # one value of the setting, pretrained in rows
        assert sorted(pivot.mean.iloc[:, 0].round(4)) == [0.2, 0.85]


def test_table_unknown_key_names_the_valid_ones():
    finals, settings = _finals_and_settings()
    with pytest.raises(BenchError) as info:
        rp.make_pivot(finals, ["method"], ["nope"], settings=settings)
    message = str(info.value)
    for key in ("pretrained", "lr", "image_size", "weights_sha256", "alpha", "method"):
        assert key in message
    assert "device" not in message.split("(aliases")[0]  # where it ran is not a table key


# --- 8. ls backbones -----------------------------------------------------------------------------

def test_ls_backbones_lists_families_with_patch_and_sizes(monkeypatch, capsys):
    code, out, err = invoke(["ls", "backbones", "--format", "tsv"], monkeypatch, capsys)
    assert code == 0, err
    lines = [line.split("\t") for line in out.splitlines()]
    assert lines[0] == ["family (* = size)", "sizes", "patch", "timm px", "used px", "pretrained tags"]
    rows = {cells[0]: cells for cells in lines[1:]}
    dinov2 = rows["vit_*_patch14_dinov2"]
    assert "small" in dinov2[1].split(",") and dinov2[2:5] == ["14", "518", "224"]  # patch, timm default, used
    assert rows["vit_*_patch16_224"][2:5] == ["16", "224", "224"] and rows[MICRO][2:5] == ["8", "-", "16"]
    assert "--check NAME" in err


def test_ls_backbones_check(tmp_path, monkeypatch, capsys):
    code, out, err = invoke(["ls", "backbones", "--check", "vit_small_patch14_dinov2"], monkeypatch, capsys)
    assert code == 0, err
    assert "patch 14" in out and "224 px" in out and "518 px" in out and "LayerScale" in out
    assert "https://huggingface.co/timm/vit_small_patch14_dinov2.lvd142m" in out
    code, _, err = invoke(["ls", "backbones", "--check", "vit_smal_patch14_dinov2"], monkeypatch, capsys)
    assert "did you mean vit_small_patch14_dinov2" in user_error(code, err, tmp_path)
    code, _, err = invoke(["ls", "backbones", "--check", "resnet18"], monkeypatch, capsys)
    assert "LoRA cannot be put on it" in user_error(code, err, tmp_path)


# --- 9. run --help -------------------------------------------------------------------------------

def test_run_help_shows_a_default_for_every_option(monkeypatch, capsys):
    code, out, _ = invoke(["run", "--help"], monkeypatch, capsys)
    assert code == 0
    blocks: list[str] = []  # one block per option: its line and the wrapped lines that follow
    for line in out.split("Options:", 1)[1].splitlines():
        if line.startswith("  --"):
            blocks.append(line)
        elif blocks:
            blocks[-1] += " " + line.strip()
    blocks = [" ".join(b.split()) for b in blocks if not b.startswith("  --help")]
    assert len(blocks) > 25
    missing = [b.split()[0] for b in blocks if "[default:" not in b]
    assert not missing, missing
    shown = {b.split()[0]: b.split("[default:")[1] for b in blocks}
    assert "5" in shown["--rounds"] and "224" in shown["--image-size"] and "fedavg" in shown["--method"]


def test_hub_cached_weights_are_identified_by_hash_and_pretrained_tag(tmp_path, monkeypatch, tiny_spec_values):
    import huggingface_hub.constants as hub
    import timm
    from safetensors.torch import save_file

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--timm--test_vit.r160_in1k"  # timm's hub id for test_vit, with its tag
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    cached = repo / "snapshots" / "0123abcd" / "model.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_vit").state_dict().items()}, str(cached))
    values = {**tiny_spec_values, "backbone": "test_vit", "image_size": 32, "rounds": 1}
    spec = make_spec(values)
    random = make_spec({**values, "pretrained": False})
    expected = hashlib.sha256(cached.read_bytes()).hexdigest()
    assert identity.id_payload(spec) == {"pretrained_weights": {"weights_sha256": expected, "pretrained_tag": "r160_in1k"}}
    assert identity.id_payload(random) == {}
    before = spec.run_id
    outcome = run_federation(spec, tmp_path / "out")
    record = json.loads((outcome.run_dir / "spec.json").read_text())
    assert (record["weights_sha256"], record["weights_source"], record["pretrained_tag"]) == \
        (expected, "hub-cache", "r160_in1k")
    save_file({k: v.contiguous() + 1 for k, v in timm.create_model("test_vit").state_dict().items()}, str(cached))
    os.utime(cached, ns=(0, 10**18))
    assert make_spec(values).run_id != before  # new weights in the cache: a new experiment
