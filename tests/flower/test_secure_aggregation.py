"""Secure aggregation (Flower's SecAgg+ in simulation, ``--engine flower --secure-aggregation``).

Slow (one Ray simulation per run), run by .ci/run: fedavg and fedavg+dp give, round by round, the test
metrics of the same run without secure aggregation, up to SecAgg+'s quantisation (each entry of a
client's update is quantised to 2^22 levels over [-1, 1]: 5e-7, and the weights to 2^22 levels of the
largest client's size). The refusals and the client-side privatisation need no simulation.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from livar_bench.config import make_spec
from livar_bench.errors import BenchError
from livar_bench.federation import run_federation
from livar_bench.methods import parse_method
from livar_bench.seeding import STREAM_SERVER, generator
from livar_bench.store import RunStore
from tests.methods._fakes import context, make_updates

VALUES = dict(dataset="digits", backbone="livar_micro_vit", num_clients=3, rounds=2, local_epochs=1, batch_size=32,
              lr=3e-3, alpha=0.5, lora_rank=2, lora_alpha=2.0, device="cpu", seed=0, max_train_samples=120,
              max_test_samples=80)


def _test_rows(out, spec) -> pd.Series:
    frame = pd.read_csv(RunStore(out).run_dir(spec.run_id) / "metrics.csv")
    return frame[frame["split"] == "test"].sort_values(["round", "metric"]).set_index(["round", "metric"])["value"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fedavg", "fedavg+dp[sigma=0.5,clip=0.5]"])
def test_secagg_gives_the_aggregate_without_it(method: str, tmp_path) -> None:
    pytest.importorskip("ray")
    from livar_bench.flower.engine import Simulation

    plain = make_spec({**VALUES, "method": method})
    secure = plain.replace(secure_aggregation=True)
    assert secure.run_id != plain.run_id  # quantised: a different experiment, however close
    run_federation(plain, tmp_path)  # the local engine
    run_federation(secure, tmp_path, launcher=Simulation())
    a, b = _test_rows(tmp_path, plain), _test_rows(tmp_path, secure)
    assert list(a.index) == list(b.index)
    losses = a.index.get_level_values("metric") == "loss"
    assert (a[losses] - b[losses]).abs().max() < 1e-4
    assert (a[~losses] - b[~losses]).abs().max() <= 1 / 80 + 1e-9  # at most one test image either way


def test_secure_aggregation_is_refused_where_the_server_needs_each_client() -> None:
    for method in ("livar", "ties", "fedavg+ccvr", "flora"):
        with pytest.raises(BenchError, match="needs each client's contribution") as err:
            make_spec({**VALUES, "method": method, "secure_aggregation": True})
        assert "\n" not in str(err.value)
    with pytest.raises(BenchError, match="adaptive"):
        make_spec({**VALUES, "method": "fedavg+dp[adaptive=true]", "secure_aggregation": True})
    assert make_spec({**VALUES, "method": "fedadam", "secure_aggregation": True}).secure_aggregation


def test_a_client_privatises_its_update_as_the_servers_dp_would() -> None:
    """Under secure aggregation each client clips and noises its own update; it draws the noise the
    server's dp stage would have drawn for it, so both engines give the same numbers."""
    pytest.importorskip("flwr")
    from livar_bench.flower.secagg import private_update

    base, updates = make_updates(4)
    spec = make_spec({**VALUES, "method": "fedavg+dp[sigma=0.7,clip=0.3]"})
    method = parse_method(spec.method)
    ctx = dataclasses.replace(context(), generator=generator(spec.seed, STREAM_SERVER, 2), num_clients=3)
    _, server = method.stages[-1].before(method.init_state(base), updates, ctx, method)
    for k, u in enumerate(updates):
        own = private_update(spec, method, base, u, 2, len(updates))
        assert all(torch.equal(own.params[key], server[k].params[key]) for key in base)
        assert own.num_samples == 1
