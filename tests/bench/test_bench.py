"""`livar-bench bench`: FLOP counts, phase timing and the command's output (CPU, tiny backbone)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from typer.testing import CliRunner

from livar_bench.bench import H100_BF16_DENSE_TFLOPS, BenchSettings, run_bench
from livar_bench.bench.flops import count_flops
from livar_bench.bench.reference import _reference_aggregate
from livar_bench.bench.timing import PhaseTimer, PhaseTimes, median_times
from livar_bench.cli import app
from livar_bench.errors import BenchError
from livar_bench.models import TINY_BACKBONES, build_model

TINY = dict(backbone="livar_micro_vit", clients=2, samples_per_client=12, batch_size=8, eval_samples=8,
            num_classes=10, lora_rank=2, lora_alpha=2.0, device="cpu")


def hand_forward_flops(cfg: dict, rank: int, classes: int) -> int:
    """Forward FLOPs of one image (2 per multiply-add) from the architecture, written out by hand."""
    d, p, size = cfg["embed_dim"], cfg["patch_size"], cfg["img_size"]
    n = (size // p) ** 2
    t = n + 1  # patches + class token
    hidden = int(d * cfg["mlp_ratio"])
    patch = 2 * n * (3 * p * p) * d
    base = 2 * t * (d * 3 * d + d * d + d * hidden + hidden * d)  # qkv, proj, fc1, fc2
    lora = 2 * t * rank * ((d + 3 * d) + (d + d) + (d + hidden) + (hidden + d))  # x@A^T then @B^T per module
    attention = 2 * (2 * t * t * d)  # q @ k^T and attn @ v over all heads
    head = 2 * d * classes  # the class token only
    return patch + cfg["depth"] * (base + lora + attention) + head


def test_forward_flops_match_the_architecture():
    model, info = build_model("livar_micro_vit", 10, rank=2, alpha=2.0, pretrained=False)
    train, forward = count_flops(model, info.input_size, torch.device("cpu"))
    assert forward == hand_forward_flops(TINY_BACKBONES["livar_micro_vit"], 2, 10)
    # Frozen backbone: backward adds activation gradients (< 1 forward) and tiny LoRA/head weight
    # gradients, so training stays well under the 3x forward of full fine-tuning.
    assert 1.5 * forward < train < 2.5 * forward
    assert all(p.grad is None for p in model.trainable.values())


def test_phase_timer_and_median():
    import types

    import livar_bench.bench.timing as timing

    ticks = iter([10.0, 12.5])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
        with PhaseTimer(torch.device("cpu")) as t:
            pass
    assert t.seconds == 2.5 and t.peak_mib is None
    runs = [PhaseTimes(3.0, 1.0, 2.0, 30, 10), PhaseTimes(1.0, 5.0, 4.0, 30, 10), PhaseTimes(2.0, 3.0, 9.0, 30, 10)]
    med = median_times(runs)
    assert (med.train_s, med.aggregate_s, med.eval_s) == (2.0, 3.0, 4.0)
    assert med.train_images_per_s == 15.0 and med.eval_images_per_s == 2.5
    assert median_times([]) is None


def test_reference_dense_merge():
    model, _ = build_model("livar_micro_vit", 10, rank=2, alpha=4.0, pretrained=False)
    g = torch.Generator().manual_seed(0)
    clients = []
    for _ in range(2):
        c = copy.deepcopy(model)
        c.load_params({k: torch.randn(v.shape, generator=g) for k, v in model.trainable.items()})
        clients.append(c)
    merged = _reference_aggregate(model, clients, [1, 3])
    key = "blocks.1.mlp.fc1"
    w0 = model.net.blocks[1].mlp.fc1.base_layer.weight
    ba = [c.trainable[f"{key}.lora_B"] @ c.trainable[f"{key}.lora_A"] for c in clients]
    expected = w0 + 2.0 * (0.25 * ba[0] + 0.75 * ba[1])  # scale alpha / r = 2, weights n_k / N
    torch.testing.assert_close(merged.net.blocks[1].mlp.fc1.base_layer.weight, expected)
    assert torch.count_nonzero(merged.trainable[f"{key}.lora_B"]) == 0
    torch.testing.assert_close(merged.trainable["head.bias"],
                               0.25 * clients[0].trainable["head.bias"] + 0.75 * clients[1].trainable["head.bias"])


def test_run_bench_reports_every_path():
    result = run_bench(BenchSettings(**TINY, pack=2))
    for name in ("optimised", "packed", "reference"):
        r = result[name]
        assert r["train_images"] == 24 and r["eval_images"] == 8
        assert r["train_images_per_s"] > 0 and r["eval_images_per_s"] > 0 and r["aggregate_s"] >= 0
    assert result["pack"] == 2 and result["precision"] == "fp32" and result["fused_attention"]
    sp = result["speedup"]
    assert sp["train_images_per_s"] == pytest.approx(
        result["optimised"]["train_images_per_s"] / result["reference"]["train_images_per_s"])
    # achieved TFLOP/s is what its label says (training FLOPs per image x images per second), and the percentage
    # is of the peak the result says it assumed (the default: the H100 datasheet figure)
    assert result["achieved_train_tflops"] == pytest.approx(
        result["flops"]["train_per_image"] * result["optimised"]["train_images_per_s"] / 1e12)
    assert result["peak_tflops_assumed"] == H100_BF16_DENSE_TFLOPS
    assert result["percent_of_peak"] * result["peak_tflops_assumed"] / 100 == pytest.approx(result["achieved_train_tflops"])
    other = run_bench(BenchSettings(**TINY, reference=False, peak_tflops=2.0))
    assert other["peak_tflops_assumed"] == 2.0 and other["percent_of_peak"] == pytest.approx(50 * other["achieved_train_tflops"])
    json.dumps(result)  # JSON-ready


def test_cli_json_and_errors():
    runner = CliRunner()
    args = ["bench", "--backbone", "livar_micro_vit", "--clients", "1", "--samples-per-client", "8",
            "--batch-size", "8", "--eval-samples", "8", "--classes", "10", "--lora-rank", "2", "--device", "cpu",
            "--no-reference", "--json"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["reference"] is None and "speedup" not in data and data["optimised"]["train_images"] == 8
    bad = runner.invoke(app, ["bench", "--clients", "0", "--device", "cpu"])
    assert isinstance(bad.exception, BenchError)
    with pytest.raises(BenchError, match="precision"):
        run_bench(BenchSettings(**{**TINY, "precision": "fp8"}))


def test_bench_refuses_an_image_size_with_the_check_run_makes(monkeypatch, capsys, tmp_path):
    """Issue 26: one memory check for both commands, so the same size gets the same line from each."""
    import livar_bench.resources as resources
    from tests._cli import assert_user_error, invoke

    monkeypatch.setattr(resources, "available_memory", lambda: 10**9)  # a 1 GB machine
    size = ["--image-size", "1024", "--batch-size", "16", "--eval-batch-size", "256", "--device", "cpu"]
    lines = []
    for args in (["run", "--dataset", "synthetic", "--backbone", "livar_micro_vit", "--out", str(tmp_path), *size],
                 ["bench", "--backbone", "livar_micro_vit", "--json", *size]):
        code, _, err = invoke(args, monkeypatch, capsys)
        lines.append(assert_user_error(code, err, tmp_path, "--image-size 1024: one batch of 256 input images",
                                       "more than the 1.0 GB of memory available"))
    assert lines[0] == lines[1]
    monkeypatch.setattr(resources, "available_memory", lambda: None)  # unknown: nothing refused on memory grounds
    resources.check_image_size(1024, 16, 256)


@pytest.mark.parametrize(("changes", "message"), [
    ({"num_classes": 0}, "--classes and --eval-samples must be at least 1"),
    ({"eval_samples": 0}, "--classes and --eval-samples must be at least 1"),
    ({"peak_tflops": 0.0}, "--peak-tflops 0.0"), ({"peak_tflops": float("inf")}, "--peak-tflops inf"),
    ({"lora_rank": 0}, "invalid bench settings: lora_rank"), ({"lora_alpha": 0.0}, "lora_alpha"),
    ({"eval_batch_size": 0}, "eval_batch_size"), ({"image_size": 12}, "not a multiple of livar_micro_vit's patch size 8"),
    ({"method": "ties[density=2]"}, "ties.density"), ({"pack": -1}, "pack"), ({"lr": 1e38}, "lr: at most 3.4e37"),
    ({"samples_per_client": 10**12}, "the synthetic workload (2000000000008 images of 16x16 px)"),
])
def test_bench_settings_are_checked_before_anything_is_built(changes, message, monkeypatch):
    import livar_bench.bench.run as bench_run

    def not_built(*args, **kwargs):
        raise AssertionError("the model was built before the settings were checked")

    monkeypatch.setattr(bench_run, "build_model", not_built)
    with pytest.raises(BenchError) as info:
        run_bench(BenchSettings(**{**TINY, **changes}))
    assert message in str(info.value)


def test_bench_refuses_a_rank_above_a_layer_as_run_does():
    with pytest.raises(BenchError, match="LoRA rank 100 is larger than layer blocks.0.attn.qkv allows"):
        run_bench(BenchSettings(**{**TINY, "lora_rank": 100}))
