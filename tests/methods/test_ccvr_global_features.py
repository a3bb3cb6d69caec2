"""ccvr[features=global] computes its class statistics on the model the round evaluates (issue 24).

After FedEx-LoRA, FLoRA or LIVAR-Exact the new global model is W0 + D' + s B'A'; the extra client round used
to apply the round's *previous* corrections D to the new factors, a model nobody evaluates (with FLoRA, the
model before this round's fold). Here the pass's features are compared with features computed directly,
outside the pass, on the evaluated global model.
"""

from __future__ import annotations

import pytest
import torch

from livar_bench.client.extra_round import ExtraRoundPass
from livar_bench.client.phase import base_deltas_applied
from livar_bench.client.signals import class_statistics
from livar_bench.client.train import LocalSettings, embed
from livar_bench.config import make_spec
from livar_bench.federation import setup_run
from livar_bench.federation.kernel import local_settings, round_context, train_round_clients
from livar_bench.methods import MethodSpec


@pytest.mark.parametrize("name", ["fedex_lora", "flora", "livar_exact"])
def test_the_extra_round_sees_the_evaluated_global_model(name: str, tiny_spec_values) -> None:
    spec = make_spec({**tiny_spec_values, "method": f"{name}+ccvr[features=global]", "rounds": 2})
    s = setup_run(spec)
    method = spec.method_spec.build()
    state = method.init_state(s.model.initial_params(torch.Generator().manual_seed(0)))
    settings = local_settings(s)
    for round_ in (1, 2):  # round 2 starts from non-zero corrections, so old and new ones differ
        with base_deltas_applied(s.model, state.base_deltas):
            starts = {k: method.client_start(state, k) for k in range(spec.num_clients)}
            results = train_round_clients(s, method, settings, state.params, starts, round_, method.requires)
        updates = [r.update for r in results.values()]
        seen = []
        probe = ExtraRoundPass(s.model, dict(enumerate(s.clients)), s.eval_tf, s.bundle.num_classes, settings,
                               seed=spec.seed, round_=round_)

        def recording(request, probe=probe, seen=seen):
            replies = ExtraRoundPass.__call__(probe, request)
            seen.append((request, replies))
            return replies

        ctx = round_context(s, round_, None)
        ctx = type(ctx)(**{**ctx.__dict__, "extra_round": recording})
        new = method.server_step(state, updates, ctx)
        (request, replies), = seen
        assert new.base_deltas and request.base_deltas is new.base_deltas
        # directly: the evaluated model (new corrections, the aggregator's params before the head refit)
        before_head = method.aggregator.server_step(state, updates, ctx)
        with base_deltas_applied(s.model, new.base_deltas):
            s.model.load_params(before_head.params)
            for k, u in zip(range(spec.num_clients), replies, strict=True):
                feats, logits = embed(s.model, s.clients[k].images, s.eval_tf, 256, None)
                labels = s.clients[k].labels
                want = class_statistics(feats, labels, logits.argmax(1) == labels, s.bundle.num_classes, False)
                torch.testing.assert_close(u.class_stats.mean, want.mean, rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(u.class_stats.var, want.var, rtol=1e-5, atol=1e-5)
        state = new


def test_only_the_compositions_whose_numbers_changed_get_new_ids(tiny_spec_values, monkeypatch) -> None:
    from livar_bench.methods.ccvr import CCVR

    def run_id(method: str) -> str:
        return make_spec({**tiny_spec_values, "method": method}).run_id

    specs = ["fedex_lora+ccvr[features=global]", "flora+ccvr[preset=paper]", "livar_exact+ccvr[features=global]",
             "fedex_lora+ccvr", "livar+ccvr", "ccvr[preset=paper]", "fedavg+ccvr[features=global]"]
    now = {m: run_id(m) for m in specs}
    monkeypatch.setattr(CCVR, "content_digest", lambda self: None)  # the ids before issue 24
    before = {m: run_id(m) for m in specs}
    assert [now[m] != before[m] for m in specs] == [True, True, True, False, False, False, False]


def test_the_extra_round_counts_the_new_corrections_it_sends(tiny_spec_values) -> None:
    from livar_bench.client.costs import params_bytes
    from livar_bench.types import ExtraRound, Signal

    s = setup_run(make_spec(tiny_spec_values))
    params = s.model.initial_params(torch.Generator().manual_seed(0))
    probe = ExtraRoundPass(s.model, {0: s.clients[0]}, s.eval_tf, s.bundle.num_classes,
                           LocalSettings(1, 32, 3e-3, 0.1, None), seed=0, round_=1)
    module = next(k[: -len(".lora_A")] for k in params if k.endswith(".lora_A"))
    weight = s.model.net.get_submodule(module).base_layer.weight
    deltas = {module: torch.zeros_like(weight)}
    probe(ExtraRound(params, frozenset({Signal.CLASS_STATS}), deltas))
    assert probe.download_bytes == params_bytes(params) + weight.numel() * 4
    assert MethodSpec.parse("fedex_lora+ccvr[features=global]")  # a valid spec
