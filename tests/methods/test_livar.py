"""LIVAR: hand-computed head and LoRA weights, the reference evaluation delta, spec parsing."""

from __future__ import annotations

import json

import pytest
import torch

from livar_bench.cli.run import apply_params
from livar_bench.errors import BenchError
from livar_bench.methods import Livar, parse_method
from livar_bench.methods.base import ClassStats, ClientUpdate, RoundContext, Signal
from livar_bench.methods.livar import head_weights, lora_weights
from livar_bench.methods.livar_rule import PAPER_RULE, LivarRule
from livar_bench.types import ServerState

# The paper's raw weights (PAPER.md table), typed in by hand: rows B bucket low/mid/high, cols A bucket.
LOW = 0.03813978
TABLE = {("mid", "low"): 0.09813978, ("mid", "mid"): 0.08813978, ("mid", "high"): 0.07813978,
         ("high", "low"): 0.19313978, ("high", "mid"): 0.11813978, ("high", "high"): 0.09313978}


def ctx() -> RoundContext:
    return RoundContext(round=1, num_rounds=1, num_classes=4, lora_scale=2.0, generator=torch.Generator().manual_seed(0))


def stats(counts: list[int], var: list[list[float]], var_correct: list[list[float]]) -> ClassStats:
    c = torch.tensor(counts)
    return ClassStats(count=c, mean=torch.zeros(4, 2), var=torch.tensor(var), count_correct=c,
                      var_correct=torch.tensor(var_correct))


def head_clients(var_c1: list[list[float]] | None = None) -> tuple[dict, list[ClientUpdate]]:
    """Two clients, four classes (D = 2). Client 0 holds classes 0, 1; client 1 holds 1, 2; nobody 3.

    Client 0's head is all 1 (bias 10), client 1's all 5 (bias 20), the global head all 9 (bias -1).
    """
    glob = {"head.weight": torch.full((4, 2), 9.0), "head.bias": torch.full((4,), -1.0),
            "m.lora_A": torch.zeros(1, 2), "m.lora_B": torch.zeros(2, 1)}
    s0 = stats([5, 3, 0, 0], var=[[1, 3], [4, 4], [0, 0], [0, 0]], var_correct=[[1, 3], [2, 2], [0, 0], [0, 0]])
    s1 = stats([0, 4, 6, 0], var=[[0, 0], [4, 12], [2, 2], [0, 0]],
               var_correct=var_c1 or [[0, 0], [6, 6], [1, 1], [0, 0]])
    u0 = ClientUpdate(0, 8, torch.tensor([5, 3, 0, 0]), {"head.weight": torch.ones(4, 2), "head.bias": torch.full((4,), 10.0),
                      "m.lora_A": torch.ones(1, 2), "m.lora_B": torch.ones(2, 1)}, signals={"class_stats": s0})
    u1 = ClientUpdate(1, 24, torch.tensor([0, 4, 6, 0]), {"head.weight": torch.full((4, 2), 5.0),
                      "head.bias": torch.full((4,), 20.0), "m.lora_A": torch.full((1, 2), 5.0),
                      "m.lora_B": torch.full((2, 1), 5.0)}, signals={"class_stats": s1})
    return glob, [u0, u1]


def test_head_weights_by_hand() -> None:
    glob, updates = head_clients()
    # class 0: only client 0; class 1: v = 2 (client 0) vs 6 (client 1) -> 1/4, 3/4; class 2: only client 1
    weights, held = head_weights(updates, "correct")
    expected = torch.tensor([[1.0, 0.25, 0.0, 0.0], [0.0, 0.75, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(weights, expected)
    assert held.tolist() == [True, True, True, False]
    out = Livar(lora=False)(glob, updates, ctx())
    # row 1 = 1/4 * 1 + 3/4 * 5 = 4; bias 1/4 * 10 + 3/4 * 20 = 17.5; class 3 keeps the global row and bias
    torch.testing.assert_close(out["head.weight"], torch.tensor([[1.0, 1.0], [4.0, 4.0], [5.0, 5.0], [9.0, 9.0]]))
    torch.testing.assert_close(out["head.bias"], torch.tensor([10.0, 17.5, 20.0, -1.0]))
    # lora=False: the LoRA factors are FedAvg, 8/32 * 1 + 24/32 * 5 = 4
    torch.testing.assert_close(out["m.lora_A"], torch.full((1, 2), 4.0))


def test_head_subset_all_and_count_weighting() -> None:
    glob, updates = head_clients()
    # all samples: class 1 variances 4 vs 8 -> 1/3, 2/3; row 1 = 1/3 + 10/3 = 11/3
    out = Livar(lora=False, head_subset="all")(glob, updates, ctx())
    torch.testing.assert_close(out["head.weight"][1], torch.full((2,), 11 / 3))
    # counts x correct-variances: 3 * 2 = 6 vs 4 * 6 = 24 -> 0.2, 0.8; row 1 = 0.2 + 4 = 4.2
    out = Livar(lora=False, head_count_weighting=True)(glob, updates, ctx())
    torch.testing.assert_close(out["head.weight"][1], torch.full((2,), 4.2))


def zero_variance_round() -> tuple[dict, list[ClientUpdate]]:
    """Class 1 held by both clients with zero correct-sample variance each (class 0 and 2 positive)."""
    glob, updates = head_clients(var_c1=[[0, 0], [0, 0], [1, 1], [0, 0]])
    updates[0] = ClientUpdate(0, 8, updates[0].class_counts, updates[0].params,
                              signals={"class_stats": stats([5, 3, 0, 0], [[1, 3], [0, 0], [0, 0], [0, 0]],
                                                            [[1, 3], [0, 0], [0, 0], [0, 0]])})
    return glob, updates


def test_head_with_one_zero_variance_holder_gives_the_other_everything() -> None:
    glob, updates = head_clients(var_c1=[[0, 0], [0, 0], [1, 1], [0, 0]])
    # class 1: client 1 variance 0, client 0 positive -> client 0 gets everything (either fallback)
    for fallback in ("previous", "count"):
        out = Livar(lora=False, head_fallback=fallback)(glob, updates, ctx())
        torch.testing.assert_close(out["head.weight"][1], torch.ones(2))


def test_head_fallback_count_weights_holders_by_class_count() -> None:
    glob, updates = zero_variance_round()
    # both zero: counts 3 vs 4 -> 3/7, 4/7; row 1 = 3/7 + 20/7 = 23/7
    out = Livar(lora=False, head_fallback="count")(glob, updates, ctx())
    torch.testing.assert_close(out["head.weight"][1], torch.full((2,), 23 / 7))
    torch.testing.assert_close(out["head.bias"][1], torch.tensor(3 / 7 * 10 + 4 / 7 * 20))


def reference_head(glob: dict, updates: list[ClientUpdate]) -> tuple[torch.Tensor, torch.Tensor]:
    """fed-mammoth ``weighted_head_per_class``, written out: per client and class the weight is
    v_kc / sum_j v_jc (v = mean per-dimension variance; 0 where the total is 0 or the client lacks the
    class); a class no client weights above 0 gets (1/K) * previous row from each client, i.e. keeps it."""
    k = len(updates)
    v = torch.stack([u.class_stats.var_correct.double().mean(1) * (u.class_counts > 0) for u in updates])  # [K, C]
    total = v.sum(0)
    norm = torch.where(total > 0, v / torch.where(total > 0, total, 1.0), torch.zeros_like(v))
    covered = (norm > 0).any(0)
    not_covered = torch.where(covered, 0.0, 1.0 / k).double()
    w = sum((u.params["head.weight"].double().T * norm[i] + glob["head.weight"].double().T * not_covered).T
            for i, u in enumerate(updates))
    b = sum(u.params["head.bias"].double() * norm[i] + glob["head.bias"].double() * not_covered
            for i, u in enumerate(updates))
    return w.float(), b.float()


def test_head_fallback_previous_is_the_reference_rule() -> None:
    for glob, updates in (zero_variance_round(), head_clients()):
        out = Livar(lora=False)(glob, updates, ctx())  # the default is the reference's fallback
        ref_w, ref_b = reference_head(glob, updates)
        torch.testing.assert_close(out["head.weight"], ref_w)
        torch.testing.assert_close(out["head.bias"], ref_b)
    glob, updates = zero_variance_round()
    out = Livar(lora=False)(glob, updates, ctx())
    torch.testing.assert_close(out["head.weight"][1], glob["head.weight"][1])  # row 1 keeps the global 9s


# Signals for 4 clients (rows) x 4 modules (cols), each a permutation of 1..16 (see the bucket table).
# Quantiles of 1..16 (linear interpolation, position q * 15): A25 = 4.75, A50 = 8.5, B60 = 10, B80 = 13,
# so A low = 1..4, mid = 5..8, high = 9..16; B low = 1..9, mid = 10..13 (bounds inclusive), high = 14..16.
A_SIG = [[1, 3, 11, 13], [5, 6, 12, 14], [9, 10, 4, 15], [2, 7, 8, 16]]
B_SIG = [[14, 10, 13, 6], [15, 11, 3, 7], [16, 12, 4, 8], [1, 2, 5, 9]]
RAW = [  # by hand from the two tables above: (B bucket, A bucket) per client and module
    [TABLE["high", "low"], TABLE["mid", "low"], TABLE["mid", "high"], LOW],
    [TABLE["high", "mid"], TABLE["mid", "mid"], LOW, LOW],
    [TABLE["high", "high"], TABLE["mid", "high"], LOW, LOW],
    [LOW, LOW, LOW, LOW],
]


def signal_clients() -> tuple[dict, list[ClientUpdate], list[str]]:
    """Client k's factors are indicators: A[0, k] = 1 and B[k, 0] = 1, so a merged entry is a weight."""
    modules = [f"blocks.{m}.attn.qkv" for m in range(4)]
    glob = {}
    for m in modules:
        glob[f"{m}.lora_A"] = torch.zeros(1, 4)
        glob[f"{m}.lora_B"] = torch.zeros(4, 1)
    updates = []
    for k in range(4):
        params, signals = {}, {}
        for j, m in enumerate(modules):
            params[f"{m}.lora_A"] = torch.zeros(1, 4).index_fill(1, torch.tensor([k]), 1.0)
            params[f"{m}.lora_B"] = torch.zeros(4, 1).index_fill(0, torch.tensor([k]), 1.0)
            signals[f"{m}.lora_A"] = torch.tensor(float(A_SIG[k][j]))
            signals[f"{m}.lora_B"] = torch.tensor(float(B_SIG[k][j]))
        updates.append(ClientUpdate(k, 10 * (k + 1), torch.zeros(4, dtype=torch.long), params, signals={"lora_signal": signals}))
    return glob, updates, modules


def test_lora_weights_follow_the_paper_table() -> None:
    glob, updates, modules = signal_clients()
    raw = torch.tensor(RAW, dtype=torch.float64)
    expected = raw / raw.sum(0, keepdim=True)
    torch.testing.assert_close(lora_weights(updates, modules, PAPER_RULE), expected)
    ctx4 = RoundContext(1, 1, 4, 1.0, torch.Generator().manual_seed(0), head_keys=("h.w", "h.b"))
    out = Livar(head=False)(glob, updates, ctx4)
    for j, m in enumerate(modules):
        torch.testing.assert_close(out[f"{m}.lora_A"][0], expected[:, j].float())
        torch.testing.assert_close(out[f"{m}.lora_B"][:, 0], expected[:, j].float())
    # module 3: every client in the same bucket -> equal weights
    torch.testing.assert_close(expected[:, 3], torch.full((4,), 0.25, dtype=torch.float64))


def test_rule_file_changes_the_weights(tmp_path) -> None:
    glob, updates, modules = signal_clients()
    # Only "B high" buckets get weight; every module has such a client but module 2 and 3.
    rule = LivarRule(base=0.0, offsets=((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (3.0, 2.0, 1.0)))
    path = tmp_path / "rule.json"
    rule.save(path)
    method = Livar(rule=str(path))
    weights = lora_weights(updates, modules, method.weighting_rule)
    torch.testing.assert_close(weights[:, 0], torch.tensor([3 / 6, 2 / 6, 1 / 6, 0], dtype=torch.float64))
    # no raw weight in module 3 -> sample-count weights 10, 20, 30, 40 out of 100
    torch.testing.assert_close(weights[:, 3], torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    # the spec keeps the path's case (only names and keys are case-insensitive)
    upper = tmp_path / "MyRule.json"
    rule.save(upper)
    assert parse_method(f"LIVAR[Rule={upper}]").aggregator.weighting_rule == rule


def test_bad_rule_file_is_a_user_error(tmp_path) -> None:
    with pytest.raises(BenchError, match="does not exist"):
        parse_method("livar[rule=/nonexistent/rule.json]")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "nope"}))
    with pytest.raises(BenchError):
        Livar(rule=str(bad))


def test_reference_evaluation_delta_by_hand() -> None:
    # 1x1 factors: clients n = 1, 3 -> weights 1/4, 3/4; B_k A_k = 1*2 and 3*1; global B A = 1*1; scale 2.
    # D = 2 * (1/4 * 2 + 3/4 * 3) - 2 * 1 = 3.5
    glob = {"m.lora_A": torch.tensor([[1.0]]), "m.lora_B": torch.tensor([[1.0]])}
    updates = [ClientUpdate(0, 1, torch.zeros(1), {"m.lora_A": torch.tensor([[2.0]]), "m.lora_B": torch.tensor([[1.0]])}),
               ClientUpdate(1, 3, torch.zeros(1), {"m.lora_A": torch.tensor([[1.0]]), "m.lora_B": torch.tensor([[3.0]])})]
    c = RoundContext(1, 1, 1, 2.0, torch.Generator())
    deltas = Livar(eval_delta="reference").evaluation_deltas(ServerState(glob), updates, c)
    torch.testing.assert_close(deltas["m"], torch.tensor([[3.5]]))
    assert Livar().evaluation_deltas(ServerState(glob), updates, c) is None


def test_reference_delta_is_applied_for_evaluation_only() -> None:
    from livar_bench.client.phase import base_deltas_applied
    from livar_bench.models import build_model
    from tests.methods._fakes import make_update

    model, _ = build_model("livar_micro_vit", 4, rank=2, alpha=4.0, pretrained=False)
    base = {k: v.detach().clone() for k, v in model.trainable.items()}
    g = torch.Generator().manual_seed(0)
    updates = [make_update(k, base, g, counts) for k, counts in enumerate(([3, 3, 0, 0], [0, 2, 5, 1]))]
    method = parse_method("livar[eval_delta=reference]")
    c = RoundContext(1, 1, 4, model.scale, torch.Generator().manual_seed(0))
    state = method.server_step(method.init_state(base), updates, c)
    new = state.params
    model.load_params(new)
    layer = model.net.get_submodule("blocks.1.mlp.fc2")
    w0 = layer.base_layer.weight.detach().clone()
    with base_deltas_applied(model, method.evaluation_deltas(state, updates, c)):
        # effective weight = base + scale * B_glob A_glob must equal W0 + scale * sum_k n_k/N B_k A_k
        effective = layer.base_layer.weight + model.scale * new["blocks.1.mlp.fc2.lora_B"] @ new["blocks.1.mlp.fc2.lora_A"]
        n = torch.tensor([6.0, 8.0]) / 14
        target = w0 + model.scale * sum(n[k] * updates[k].params["blocks.1.mlp.fc2.lora_B"]
                                        @ updates[k].params["blocks.1.mlp.fc2.lora_A"] for k in range(2))
        torch.testing.assert_close(effective, target, rtol=1e-5, atol=1e-5)
    assert torch.equal(layer.base_layer.weight, w0)


def test_requires_follows_the_parts() -> None:
    assert Livar().requires == {Signal.CLASS_STATS, Signal.LORA_SIGNAL}
    assert Livar(head=False).requires == {Signal.LORA_SIGNAL}
    assert Livar(lora=False).requires == {Signal.CLASS_STATS}
    assert parse_method("livar[head=false]+ccvr").requires == {Signal.LORA_SIGNAL, Signal.CLASS_STATS}
    assert parse_method("livar[head=false]+ccvr[model=pooled_full]").requires == {Signal.LORA_SIGNAL, Signal.CLASS_COV}


def test_hyperparameters_from_spec_and_param_option() -> None:
    assert parse_method("livar[head_subset=all]").aggregator.head_subset == "all"
    spec = apply_params("livar+ccvr", ["livar.head_subset=all", "ccvr.model=pooled_diag"])
    method = parse_method(spec)
    assert method.aggregator.head_subset == "all" and method.stages[0].model == "pooled_diag"
    for bad in ("livar[head_subset=some]", "livar[head=maybe]", "livar[nope=1]", "ties[density=x]",
                "ties[density=2]", "ccvr[epochs=0]", "fedprox[mu=-1]"):
        with pytest.raises(BenchError):
            parse_method(bad)
