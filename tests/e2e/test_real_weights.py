"""Accuracy regression on real pretrained weights (slow; run by .ci/run).

The shared DINOv2 ViT-S/14 state dict (../shared/data/weights, beside the repository) is fine-tuned with
LoRA on digits at 42 px, one client, one round of one epoch. Measured on the project's 2-core CPU
(1,000 training and 300 test images, batch 8, lr 1e-3, rank 4), test accuracy after the round:

    correct set-up       0.773 / 0.857 / 0.913 (seeds 0 / 1 / 2), 50 to 90 s each on a busy machine
    random backbone      0.143 (what a broken weight load gives: DINOv2's LayerScale makes features constant)
    no LoRA (head only)  0.530 / 0.487 / 0.490

so the floor, 0.65, is 12 points below the worst measured correct run and 12 above the best broken one.
A frozen head (LoRA only: 0.820) or a wrong normalisation (mean/std 0.5: 0.777; seed 0) does not lower
accuracy after one round, so those are checked directly below instead: the normalisation against the file's
README (ImageNet mean/std) and the head by one training step.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from tests._shared import DINOV2_WEIGHTS as WEIGHTS

SHA256 = "afced1dcb6abc12671506322f7d1e639cb3c8c6054436ec63aae6010ed082b27"  # from the file's README
FLOOR = 0.65

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"real weights not found at {WEIGHTS} (../shared beside the repo)"),
]


def _spec(**changes):
    from livar_bench.config import make_spec

    values = dict(dataset="digits", backbone="vit_small_patch14_dinov2", weights=str(WEIGHTS), image_size=42,
                  partition="iid", num_clients=1, rounds=1, local_epochs=1, batch_size=8, lr=1e-3, lora_rank=4,
                  lora_alpha=4.0, max_train_samples=1000, max_test_samples=300, device="cpu", seed=0,
                  method="fedavg")
    return make_spec({**values, **changes})


def test_one_round_on_real_weights_clears_the_floor(tmp_path):
    from livar_bench.federation import run_federation

    outcome = run_federation(_spec(), tmp_path)
    spec = json.loads((outcome.run_dir / "spec.json").read_text())
    assert spec["weights_sha256"] == SHA256 and spec["input_size"] == 42
    assert outcome.final["acc"] >= FLOOR, f"accuracy {outcome.final['acc']:.3f} below the floor {FLOOR}"


def test_real_weights_load_exactly_with_imagenet_normalisation_and_a_trained_head():
    from safetensors.torch import load_file

    from livar_bench.client.train import LocalSettings, local_train
    from livar_bench.federation import setup_run
    from livar_bench.methods import parse_method
    from livar_bench.seeding import generator

    assert hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == SHA256
    s = setup_run(_spec())
    net = s.model.net
    state = load_file(str(WEIGHTS))
    for key in ("blocks.0.attn.qkv.weight", "blocks.11.mlp.fc2.weight", "blocks.5.ls1.gamma", "norm.weight"):
        live = net.get_parameter(key.replace("attn.qkv.weight", "attn.qkv.base_layer.weight")
                                 .replace("mlp.fc2.weight", "mlp.fc2.base_layer.weight"))
        assert torch.equal(live, state[key]), key
    assert list(s.train_tf.mean) == pytest.approx([0.485, 0.456, 0.406])  # ImageNet's, as the file's README says
    assert list(s.train_tf.std) == pytest.approx([0.229, 0.224, 0.225])
    start = {k: v.clone() for k, v in s.model.initial_params(torch.Generator().manual_seed(0)).items()}
    method = parse_method("fedavg")
    few = s.clients[0].subset(torch.arange(16))
    result = local_train(s.model, start, few, s.train_tf, method.objective, LocalSettings(1, 8, 1e-3, 0.0), generator(0, 9),
                         s.bundle.num_classes)
    for key in ("head.weight", "blocks.0.attn.qkv.lora_B"):
        assert not torch.equal(result.update.params[key], start[key]), f"{key} was not trained"
