"""`clip` after methods whose global model is more than its trainable tensors (issue 24).

After FedEx-LoRA, FLoRA or LIVAR-Exact the model is W0 + D + s B A: the stage clips that effective update
(the residual included, the fresh A of FLoRA left as drawn); after a server optimiser with moments it is
refused. Expected values are computed here from the definitions, with plain tensor algebra.
"""

from __future__ import annotations

import math

import pytest
import torch

from livar_bench.config import make_spec
from livar_bench.errors import BenchError
from livar_bench.methods import MethodSpec, parse_method
from livar_bench.methods.clip import ClipUpdate
from tests.methods._fakes import MODULES, context, make_updates

SCALE = 2.0


def effective(state, module: str) -> torch.Tensor:
    """D + s B A of ``module`` [out, in], float64 (D = 0 when absent)."""
    a, b = state.params[f"{module}.lora_A"].double(), state.params[f"{module}.lora_B"].double()
    d = state.base_deltas.get(module)
    return SCALE * b @ a + (0 if d is None else d.double())


def heads(state) -> dict:
    return {k: v.double() for k, v in state.params.items() if ".lora_" not in k}


@pytest.mark.parametrize("name", ["fedex_lora", "flora", "livar_exact"])
def test_clip_bounds_the_effective_update_in_its_direction(name: str) -> None:
    params, _ = make_updates()
    alone, clipped = parse_method(name), parse_method(f"{name}+clip[max_norm=0.05]")
    start = alone.init_state(params)
    start = alone.server_step(start, make_updates(seed=1)[1], context(lora_scale=SCALE, round_=1))  # D != 0 now
    updates = make_updates(seed=2)[1]
    free = alone.server_step(start, updates, context(lora_scale=SCALE, round_=2))
    out = clipped.server_step(start, updates, context(lora_scale=SCALE, round_=2))
    # the free update: per module (D' + s B'A') - (D + s B A), and the head's step, as one vector
    moved = {m: effective(free, m) - effective(start, m) for m in MODULES}
    steps = {k: v - heads(start)[k] for k, v in heads(free).items()}
    norm = math.sqrt(sum(float((t * t).sum()) for t in [*moved.values(), *steps.values()]))
    assert norm > 0.05
    c = 0.05 / norm
    for m in MODULES:  # the model moves by c times the free update, the residual included
        torch.testing.assert_close(effective(out, m), effective(start, m) + c * moved[m], rtol=1e-5, atol=1e-6)
    for k, step in steps.items():
        torch.testing.assert_close(heads(out)[k], heads(start)[k] + c * step, rtol=1e-5, atol=1e-6)
    for k, v in free.params.items():  # the factors are the aggregator's: FLoRA's fresh A is not a blend
        if ".lora_" in k:
            assert torch.equal(out.params[k], v), k


def test_clip_after_a_plain_aggregator_still_clips_the_trainable_tensors() -> None:
    params, updates = make_updates()
    out = parse_method("fedavg+clip[max_norm=0.5]").aggregate(params, updates, context())
    norm = math.sqrt(sum(float(((out[k].double() - params[k].double()) ** 2).sum()) for k in params))
    assert norm == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedams"])
def test_clip_after_a_server_optimiser_is_refused(name: str) -> None:
    with pytest.raises(BenchError, match=rf"clip: clip cannot follow {name}: {name}'s server momentum or moments "
                                         rf"have already taken the round's unclipped step.*eta instead"):
        MethodSpec.parse(f"{name}+clip")


def test_only_the_compositions_whose_numbers_changed_get_new_ids(tiny_spec_values, monkeypatch) -> None:
    def run_id(method: str) -> str:
        return make_spec({**tiny_spec_values, "method": method}).run_id

    now = {m: run_id(m) for m in ("fedex_lora+clip", "flora+clip", "fedavg+clip", "livar+ccvr+clip")}
    monkeypatch.setattr(ClipUpdate, "content_digest", lambda self: None)  # the ids before issue 24
    before = {m: run_id(m) for m in now}
    assert now["fedex_lora+clip"] != before["fedex_lora+clip"] and now["flora+clip"] != before["flora+clip"]
    assert now["fedavg+clip"] == before["fedavg+clip"] and now["livar+ccvr+clip"] == before["livar+ccvr+clip"]
