"""Client packing gives the same client updates as training the clients one after another."""

from __future__ import annotations

import pytest
import torch

from livar_bench.client.objectives import Proximal
from livar_bench.client.packed import _masked_adamw, packed_local_train, resolve_pack
from livar_bench.client.train import LocalSettings, local_train
from livar_bench.data.base import ImageSplit
from livar_bench.data.offline import make_synthetic
from livar_bench.data.transforms import DeviceTransform
from livar_bench.methods.base import CrossEntropy, Signal
from livar_bench.models import build_model

ALL_SIGNALS = frozenset({Signal.LORA_SIGNAL, Signal.CLASS_STATS, Signal.CLASS_COV})


def test_resolve_pack():
    assert resolve_pack(None, torch.device("cpu"), 7) == 1
    assert resolve_pack(None, torch.device("cuda"), 7) == 7
    assert resolve_pack(None, torch.device("cuda"), 30) == 10
    assert resolve_pack(0, torch.device("cuda"), 5) == 1
    assert resolve_pack(4, torch.device("cpu"), 3) == 3


def test_masked_adamw_matches_torch_and_skips_inactive_rows():
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(3, 5, generator=g)
    grads = [torch.randn(3, 5, generator=g) for _ in range(4)]
    # rows 0 and 1 active on every step; row 2 only on steps 0 and 2
    masks = [torch.tensor([[1.0], [1.0], [float(s % 2 == 0)]]) for s in range(4)]
    p, m, v = p0.clone(), torch.zeros(3, 5), torch.zeros(3, 5)
    step = torch.zeros(3, 1, dtype=torch.float64)
    for grad, mask in zip(grads, masks, strict=True):
        _masked_adamw(p, grad * mask, m, v, step, mask, lr=0.01, wd=0.1)
    for row in range(3):
        q = torch.nn.Parameter(p0[row].clone())
        opt = torch.optim.AdamW([q], lr=0.01, weight_decay=0.1)
        for grad, mask in zip(grads, masks, strict=True):
            if mask[row] == 0:
                continue  # torch's AdamW is simply not stepped for an inactive client
            q.grad = grad[row].clone()
            opt.step()
        torch.testing.assert_close(p[row], q.detach(), atol=1e-6, rtol=1e-6)
    assert step.flatten().tolist() == [4.0, 4.0, 2.0]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)  # nothing below reads it; set so a stray global draw cannot pass silently
    bundle = make_synthetic(train_per_class=8, test_per_class=1)
    model, info = build_model("livar_micro_vit", bundle.num_classes, rank=2, alpha=4.0, pretrained=False)
    tf = DeviceTransform(info.input_size, info.mean, info.std, scale=(0.6, 1.0))
    g = torch.Generator().manual_seed(1)
    start = model.initial_params(g)
    for k in start:  # non-zero B, so that every LoRA factor gets a gradient from the first step
        if k.endswith(".lora_B"):
            start[k] = torch.randn(start[k].shape, generator=g) * 0.1
    perm = torch.randperm(len(bundle.train), generator=g)
    sizes = [21, 40, 9, 13]  # different step counts per epoch, including short last batches
    cuts = torch.tensor(sizes).cumsum(0).tolist()
    datas = [bundle.train.subset(perm[a - n : a]) for n, a in zip(sizes, cuts, strict=True)]
    return model, tf, start, datas, bundle.num_classes


@pytest.mark.parametrize("objective", [CrossEntropy(), Proximal(mu=0.5)], ids=["ce", "prox"])
def test_packed_equals_sequential(setup, objective):
    model, tf, start, datas, num_classes = setup
    settings = LocalSettings(epochs=2, batch_size=8, lr=3e-3, weight_decay=0.1)

    def gens():
        return [torch.Generator().manual_seed(100 + k) for k in range(len(datas))]

    sequential = [
        local_train(model, start, d, tf, objective, settings, g, num_classes, ALL_SIGNALS, client_id=k)
        for k, (d, g) in enumerate(zip(datas, gens(), strict=True))
    ]
    packed = packed_local_train(model, start, datas, tf, objective, settings, gens(), num_classes, ALL_SIGNALS,
                                client_ids=[0, 1, 2, 3])
    for a, b in zip(sequential, packed, strict=True):
        ua, ub = a.update, b.update
        assert ua.client_id == ub.client_id and ua.num_samples == ub.num_samples and a.images == b.images
        assert torch.equal(ua.class_counts, ub.class_counts)
        assert abs(a.mean_loss - b.mean_loss) <= 1e-5 * max(1.0, abs(a.mean_loss))
        for key in ua.params:
            torch.testing.assert_close(ub.params[key], ua.params[key], atol=1e-5, rtol=1e-5, msg=key)
            assert not torch.equal(ua.params[key], start[key]), key  # every tensor was trained
        for key in ua.lora_signals:
            torch.testing.assert_close(ub.lora_signals[key], ua.lora_signals[key], atol=1e-7, rtol=1e-4, msg=key)
        sa, sb = ua.class_stats, ub.class_stats
        assert torch.equal(sa.count, sb.count) and torch.equal(sa.count_correct, sb.count_correct)
        for name in ("mean", "var", "var_correct", "cov"):
            torch.testing.assert_close(getattr(sb, name), getattr(sa, name), atol=1e-5, rtol=1e-4, msg=name)


def test_packed_leaves_model_unpatched(setup):
    model, tf, start, datas, num_classes = setup
    settings = LocalSettings(epochs=1, batch_size=8, lr=1e-3)
    packed_local_train(model, start, datas[:2], tf, CrossEntropy(), settings,
                       [torch.Generator().manual_seed(k) for k in range(2)], num_classes)
    assert all("forward" not in vars(m) for m in model.net.modules())
    x = ImageSplit(datas[0].images[:4], datas[0].labels[:4])
    model.load_params(start)
    model.eval()
    with torch.no_grad():
        assert model(tf.eval(x.images)).shape == (4, num_classes)


def test_federation_with_pack_matches_sequential(tmp_path, tiny_spec_values):
    import pandas as pd

    from livar_bench.config import make_spec
    from livar_bench.federation import run_federation

    plain = make_spec(tiny_spec_values)
    packed = plain.replace(pack=3)
    assert packed.run_id == plain.run_id  # packing is an execution setting, not part of the experiment
    a = run_federation(plain, tmp_path / "a")
    b = run_federation(packed, tmp_path / "b")

    def test_rows(outcome):
        frame = pd.read_csv(outcome.run_dir / "metrics.csv")
        return frame[frame["split"].isin(["test", "train"])].set_index(["round", "split", "metric"])["value"]

    ra, rb = test_rows(a), test_rows(b)
    assert ra.index.equals(rb.index)
    assert (ra - rb).abs().max() < 1e-4


def test_step_budgets_cut_the_schedule_the_same_way_packed_and_sequential(setup):
    """A client's budget of local steps (system heterogeneity) is its full schedule cut short: a full
    budget changes nothing, a short one stops there (steps and images counted), and packing agrees."""
    model, tf, start, datas, num_classes = setup
    settings = LocalSettings(epochs=2, batch_size=8, lr=3e-3, weight_decay=0.1)
    budgets = [3, None, 1, 5]  # client 1 keeps its full work; client 3 works more than its 2 epochs

    def gens():
        return [torch.Generator().manual_seed(100 + k) for k in range(len(datas))]

    full = local_train(model, start, datas[0], tf, CrossEntropy(), settings, gens()[0], num_classes)
    same = local_train(model, start, datas[0], tf, CrossEntropy(), settings, gens()[0], num_classes, max_steps=6)
    assert full.update.num_steps == same.update.num_steps == 6  # 21 samples: 3 batches an epoch, 2 epochs
    for key in full.update.params:
        assert torch.equal(full.update.params[key], same.update.params[key])
    sequential = [local_train(model, start, d, tf, CrossEntropy(), settings, g, num_classes, client_id=k, max_steps=b)
                  for k, (d, g, b) in enumerate(zip(datas, gens(), budgets, strict=True))]
    assert [r.update.num_steps for r in sequential] == [3, 10, 1, 5]
    # client 3 holds the last 10 of the 80 samples: batches of 8 and 2, so 5 steps are 2 epochs and 8 images
    assert [len(d) for d in datas] == [21, 40, 9, 10]
    assert [r.images for r in sequential] == [21, 80, 8, 2 * 10 + 8]
    packed = packed_local_train(model, start, datas, tf, CrossEntropy(), settings, gens(), num_classes,
                                client_ids=[0, 1, 2, 3], budgets=budgets)
    for a, b in zip(sequential, packed, strict=True):
        assert a.update.num_steps == b.update.num_steps and a.images == b.images
        for key in a.update.params:
            torch.testing.assert_close(b.update.params[key], a.update.params[key], atol=1e-5, rtol=1e-5, msg=key)
    short = sequential[0].update.params
    assert any(not torch.equal(short[k], full.update.params[k]) for k in short)  # 3 steps are not 6
