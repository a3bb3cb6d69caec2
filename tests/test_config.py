"""RunSpec validation, run ids and YAML loading."""

from __future__ import annotations

import pytest

from livar_bench.config import NON_IDENTITY_FIELDS, RunSpec, load_yaml, make_spec
from livar_bench.errors import BenchError


def test_defaults_follow_the_paper_protocol():
    spec = make_spec({})
    assert (spec.num_clients, spec.rounds, spec.local_epochs, spec.batch_size) == (10, 5, 5, 16)
    assert spec.lr == 1e-4 and spec.weight_decay == 0.1 and spec.min_client_samples == 6
    assert spec.lora_targets == ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


@pytest.mark.parametrize("values,field", [
    ({"alpha": 0}, "alpha"),
    ({"alpha": -0.5}, "alpha"),
    ({"num_clients": 0}, "num_clients"),
    ({"rounds": 0}, "rounds"),
    ({"lr": 0}, "lr"),
    ({"participation": 1.5}, "participation"),
    ({"precision": "fp16"}, "precision"),
    ({"colour": "red"}, "colour"),
])
def test_bad_values_are_one_line_bench_errors(values, field):
    with pytest.raises(BenchError) as info:
        make_spec(values)
    message = str(info.value)
    assert message.startswith("invalid run settings") and field in message and "\n" not in message


def test_unknown_dataset_and_method_fail_at_validation():
    with pytest.raises(BenchError, match="unknown dataset 'imagenet'.*Known"):
        make_spec({"dataset": "imagenet"})
    with pytest.raises(BenchError, match="unknown method 'fedavgg'.*Did you mean fedavg"):
        make_spec({"method": "fedavgg"})


def test_aliases_and_case_give_the_same_run():
    a = make_spec({"dataset": "cifar100", "method": "fedavg"})
    b = make_spec({"dataset": " CIFAR-100 ", "method": "FedAvg"})
    assert b.dataset == "cifar100" and a.run_id == b.run_id


def test_run_id_ignores_where_and_how_fast_only():
    base = make_spec({"dataset": "digits", "seed": 1})
    assert {"data_root", "device", "eval_batch_size", "cache_dir", "download"} <= NON_IDENTITY_FIELDS
    same = make_spec({"dataset": "digits", "seed": 1, "device": "cpu", "eval_batch_size": 7, "data_root": "/x"})
    assert base.run_id == same.run_id
    for change in ({"seed": 2}, {"alpha": 0.1}, {"lr": 3e-4}, {"backbone": "livar_micro_vit"}, {"partition": "iid"}):
        assert make_spec({"dataset": "digits", "seed": 1, **change}).run_id != base.run_id, change


def test_partition_id_is_shared_by_methods_and_training_settings():
    a = make_spec({"method": "fedavg", "lr": 1e-3})
    b = make_spec({"method": "fedavg", "lr": 1e-2, "rounds": 2})
    assert a.partition_id == b.partition_id and a.run_id != b.run_id
    assert a.partition_id != make_spec({"alpha": 0.1}).partition_id


def test_spec_is_frozen_and_replace_validates():
    spec = make_spec({})
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error type varies by version
        spec.alpha = 2.0  # type: ignore[misc]
    assert spec.replace(alpha=0.1).alpha == 0.1
    with pytest.raises(BenchError):
        spec.replace(alpha=-1)
    assert isinstance(spec, RunSpec)


def test_load_yaml(tmp_path):
    good = tmp_path / "a.yaml"
    good.write_text("dataset: digits\nalpha: 0.1\n")
    assert load_yaml(good) == {"dataset": "digits", "alpha": 0.1}
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(tmp_path / "empty.yaml") == {}
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(BenchError, match="mapping"):
        load_yaml(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(BenchError, match="not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")
    with pytest.raises(BenchError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_the_largest_learning_rate_is_the_one_adamw_can_step_with():
    """Issue 26: above MAX_LR torch cannot take AdamW's first step (10 x lr past float32); at it, it can (and
    the run then reports the divergence as such)."""
    import numpy as np
    import torch

    from livar_bench.client.train import LocalSettings, make_optimizer
    from livar_bench.config import MAX_LR

    def first_step(lr: float) -> None:
        p = torch.nn.Parameter(torch.ones(3))
        p.grad = torch.ones(3)
        make_optimizer([p], LocalSettings(epochs=1, batch_size=1, lr=lr, weight_decay=0.1)).step()

    first_step(MAX_LR)
    assert make_spec({"lr": MAX_LR}).lr == MAX_LR
    above = 3.41e37  # 10 x above = 3.41e38 > 3.4028e38, the largest float32
    with pytest.raises(RuntimeError, match="cannot be converted to type float without overflow"):
        first_step(above)
    for lr in (above, float(np.nextafter(MAX_LR, np.inf)), 1e308):
        with pytest.raises(BenchError, match=r"invalid run settings: lr: at most 3.4e37 \(AdamW's first step"):
            make_spec({"lr": lr})
