"""Stages see the previous global state (update clipping) and the server's own data."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import pytest
import torch

from livar_bench.config import make_spec
from livar_bench.federation import run_federation
from livar_bench.methods import (
    ClientUpdate,
    RoundContext,
    ServerState,
    Stage,
    describe,
    parse_method,
    registry,
)
from tests.methods._fakes import context, make_updates


def test_clip_by_hand() -> None:
    # One tensor moved from (0, 0) to (3, 4) by FedAvg: ||u|| = 5; max_norm 1 -> (0.6, 0.8).
    glob = {"w": torch.zeros(2)}
    updates = [ClientUpdate(0, 1, torch.zeros(1), {"w": torch.tensor([3.0, 4.0])})]
    out = parse_method("fedavg+clip[max_norm=1]").aggregate(glob, updates, context())
    torch.testing.assert_close(out["w"], torch.tensor([0.6, 0.8]))
    loose = parse_method("fedavg+clip[max_norm=10]").aggregate(glob, updates, context())
    torch.testing.assert_close(loose["w"], torch.tensor([3.0, 4.0]))  # within the bound: unchanged


def test_clip_bounds_the_global_step_of_any_aggregator() -> None:
    params, updates = make_updates()
    for spec in ("livar+clip[max_norm=0.5]", "task_arithmetic+clip[max_norm=0.5]"):
        out = parse_method(spec).aggregate(params, updates, context())
        norm = math.sqrt(sum(float(((out[k].double() - params[k].double()) ** 2).sum()) for k in params))
        assert norm == pytest.approx(0.5, rel=1e-6), spec


@describe("record", paper="-", summary="test: the server's held-out loss of the new params, kept in a buffer")
class RecordServerLoss(Stage):
    """Test stage: writes the server's held-out loss of the new params into a buffer."""

    def apply(self, previous: ServerState, new: ServerState, updates: Sequence[ClientUpdate],
              ctx: RoundContext) -> ServerState:
        assert ctx.server_data is not None, "the run has a validation carve, so the server holds data"
        feats, labels = ctx.server_data.features(new.params)
        assert feats.shape[0] == labels.shape[0] > 0
        loss = ctx.server_data.loss(new.params)
        buffers = self.buffers(new)
        buffers.set("loss", "val", torch.tensor(loss))
        return new.evolve(buffers=buffers.mapping)


def test_stage_sees_server_data_in_a_run(tmp_path, tiny_spec_values, monkeypatch) -> None:
    from livar_bench.methods.base import Method

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register(RecordServerLoss)
    seen: list[float] = []
    original = Method.server_step

    def capture(self, state, updates, ctx):  # observe the state server_step returns (not a replacement)
        out = original(self, state, updates, ctx)
        seen.append(float(out.buffers["record.loss.val"]))
        return out

    monkeypatch.setattr(Method, "server_step", capture)
    spec = make_spec({**tiny_spec_values, "method": "fedavg+record", "val_fraction": 0.2, "rounds": 1})
    rows = pd.read_csv(run_federation(spec, tmp_path).run_dir / "metrics.csv")
    val_loss = rows[(rows["split"] == "val") & (rows["metric"] == "loss") & (rows["round"] == 1)]["value"].item()
    # The stage evaluated the new params on the server's held-out data: the loop's val loss of round 1.
    assert seen == [pytest.approx(val_loss, rel=1e-5)]
