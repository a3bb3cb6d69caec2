"""The dp wrapper: the method unchanged without noise or clipping, the clip stage's arithmetic per update,
the noise the spec asks for, public weights, adaptive clipping as server state, refusals in one line."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from livar_bench.errors import BenchError
from livar_bench.methods import MethodSpec, parse_method
from livar_bench.methods.clip import ClipUpdate
from livar_bench.methods.dp import privacy_report
from livar_bench.privacy import PrivacyModel, epsilon
from livar_bench.types import ClientUpdate, ServerState
from tests.methods._fakes import context, make_updates


def step(spec: str, base, updates, seed: int = 0, state: ServerState | None = None) -> ServerState:
    method = parse_method(spec)
    ctx = dataclasses.replace(context(seed), num_clients=len(updates))
    return method.server_step(state or method.init_state(base), updates, ctx)


@pytest.mark.parametrize("plain", ["fedavg", "livar", "livar+ccvr", "fedadam", "ties"])
def test_no_noise_no_clipping_is_the_method_bit_for_bit(plain: str) -> None:
    base, updates = make_updates(3)
    ours = step(f"{plain}+dp[sigma=0,clip=none]", base, updates).params
    theirs = step(plain, base, updates).params
    assert all(torch.equal(ours[k], theirs[k]) for k in base)


def test_clipping_only_equals_the_clip_stage_on_each_update() -> None:
    base, updates = make_updates(1)
    updates = [dataclasses.replace(u, num_samples=1) for u in updates]  # dp makes weights uniform
    clipped = [dataclasses.replace(u, params=ClipUpdate(max_norm=0.5).apply(ServerState(base), ServerState(u.params),
                                                                             [], context()).params) for u in updates]
    ours = step("fedavg+dp[sigma=0,clip=0.5]", base, updates).params
    theirs = step("fedavg", base, clipped).params
    assert all(torch.equal(ours[k], theirs[k]) for k in base)
    # one client: clipping its update is clipping the round's global update
    one = step("fedavg+dp[sigma=0,clip=0.5]", base, updates[:1]).params
    stage = step("fedavg+clip[max_norm=0.5]", base, updates[:1]).params
    assert all(torch.equal(one[k], stage[k]) for k in base)


def test_weights_become_uniform() -> None:
    base, updates = make_updates(2)
    ours = step("fedavg+dp[sigma=0,clip=1e6]", base, updates).params
    uniform = step("fedavg", base, [dataclasses.replace(u, num_samples=7) for u in updates]).params
    assert all(torch.allclose(ours[k], uniform[k], atol=1e-6) for k in base)
    weighted = step("fedavg", base, updates).params
    assert not torch.allclose(ours["head.weight"], weighted["head.weight"], atol=1e-4)


def test_central_noise_on_the_mean_has_std_sigma_clip_over_n() -> None:
    """Clients that send the global back: the new global is theta + noise with std sigma C / n per entry."""
    base, updates = make_updates(0)
    same = [dataclasses.replace(u, params=dict(base)) for u in updates]
    n, sigma, clip = len(same), 3.0, 0.2
    draws = torch.cat([torch.cat([(step(f"fedavg+dp[sigma={sigma},clip={clip}]", base, same, seed=s).params[k] - base[k])
                                  .double().flatten() for k in base]) for s in range(60)])
    std = sigma * clip / n
    m = draws.numel()
    assert abs(float(draws.var()) - std**2) < 5 * std**2 * math.sqrt(2 / (m - 1))


def test_local_noise_for_an_individual_method_is_the_full_noise_per_client() -> None:
    """livar gets local noise: each client's update carries N(0, (sigma C)^2); seen through LIVAR's weighted
    mean with one client (weights 1), the new global is theta + that noise."""
    base, updates = make_updates(0)
    one = [dataclasses.replace(updates[0], params=dict(base))]
    draws = torch.cat([torch.cat([(step("livar[head=false]+dp[sigma=2.0,clip=0.1]", base, one, seed=s).params[k]
                                   - base[k]).double().flatten() for k in base]) for s in range(100)])
    m = draws.numel()
    assert abs(float(draws.var()) - 0.2**2) < 5 * 0.2**2 * math.sqrt(2 / (m - 1))


def test_frozen_keys_get_no_noise() -> None:
    base, updates = make_updates(0)
    out = step("ffa_lora+dp[sigma=1.0,clip=1.0]", base, updates).params
    for k in base:
        if k.endswith("lora_A"):
            assert torch.equal(out[k], base[k]), k


def test_adaptive_bound_is_server_state_and_moves_towards_the_quantile() -> None:
    base, updates = make_updates(0)  # update norms are about 2: a bound of 0.01 clips every one
    spec = "fedavg+dp[sigma=0,clip=0.01,adaptive=true,count_std=0.001,clip_lr=0.5]"
    state = step(spec, base, updates)
    bound = float(state.buffers["dp.clip"])
    assert bound == pytest.approx(0.01 * math.exp(0.5 * 0.5), rel=1e-3)  # b = 0: C grows by exp(eta gamma)
    again = step(spec, base, updates, state=state)
    assert float(again.buffers["dp.clip"]) == pytest.approx(bound * math.exp(0.25), rel=1e-3)


def test_the_report_is_the_accountant_of_the_joint_release() -> None:
    method = parse_method("fedavg+dp[sigma=2.0]")
    rows = privacy_report(method, 10, 1.0, 3)
    assert [r["epsilon"] for r in rows] == pytest.approx([epsilon(PrivacyModel(10), 2.0, t, 1e-5) for t in (1, 2, 3)])
    livar = privacy_report(parse_method("livar+dp[sigma=2.0]"), 10, 1.0, 3)
    # update + 4 class-statistics parts + LIVAR's signals, all at sigma 2; local noise: replace-one, z / 2
    assert livar[-1]["noise_multiplier"] == pytest.approx(2.0 / math.sqrt(6))
    assert livar[-1]["epsilon"] == pytest.approx(epsilon(PrivacyModel(10, local=True), 2.0 / math.sqrt(6), 3, 1e-5))
    assert privacy_report(parse_method("fedavg"), 10, 1.0, 3) is None
    assert all(math.isinf(r["epsilon"]) for r in privacy_report(parse_method("fedavg+dp[sigma=0,clip=none]"), 4, 1.0, 2))


def test_a_target_epsilon_calibrates_sigma() -> None:
    rows = privacy_report(parse_method("fedavg+dp[epsilon=5.0]"), 10, 1.0, 4)
    assert rows[-1]["epsilon"] <= 5.0 and rows[-1]["epsilon"] == pytest.approx(5.0, rel=1e-3)
    assert rows[0]["sigma"] == rows[-1]["sigma"] > 0
    with pytest.raises(BenchError, match="cannot be reached: class statistics"):
        privacy_report(parse_method("fedavg+ccvr+dp[epsilon=0.5,stats_sigma=0.5]"), 10, 1.0, 4)


@pytest.mark.parametrize("spec,match", [
    ("livar+dp[noise=central]", "needs each client's contribution .* use dp\\[noise=local\\]"),
    ("ties+dp[noise=distributed]", "needs each client's contribution"),
    ("fedavg+dp+ccvr", "dp must be the last part"),
    ("fedavg+ccvr[preset=paper]+dp", "does not privatise the extra class-statistics pass"),
    ("fedavg+dp[sigma=-1]", "dp.sigma: cannot use '-1'"),
    ("fedavg+dp[clip=0]", "dp.clip: cannot use '0'"),
    ("fedavg+dp[delta=1]", "dp.delta: cannot use '1'"),
    ("fedavg+dp[delta=0]", "dp.delta: cannot use '0'"),
    ("fedavg+dp[clip=none]", "noise needs a clipping bound"),
    ("fedavg+dp[epsilon=1,sigma=2]", "give sigma or epsilon, not both"),
    ("fedavg+dp[epsilon=0]", "dp.epsilon: cannot use '0'"),
])
def test_bad_settings_are_one_line(spec: str, match: str) -> None:
    with pytest.raises(BenchError, match=match) as err:
        MethodSpec.parse(spec)
    assert "\n" not in str(err.value)


def test_secure_aggregation_declarations() -> None:
    assert parse_method("fedavg+dp").secure_aggregation[0] == "sum"
    assert parse_method("fedadam").secure_aggregation[0] == "sum"
    kind, reason = parse_method("fedavg+ccvr").secure_aggregation
    assert kind == "individual" and reason.startswith("ccvr:")
    assert parse_method("fedavg[space=product]").secure_aggregation[0] == "individual"
    assert parse_method("livar").secure_aggregation[0] == "individual"
    assert parse_method("livar[head=false,lora=false]").secure_aggregation[0] == "sum"


def test_auto_noise_is_central_for_sum_methods_and_local_otherwise() -> None:
    dp = parse_method("fedavg+dp").stages[-1]
    assert dp.noise_placement(parse_method("fedavg+dp")) == "central"
    assert dp.noise_placement(parse_method("livar+dp")) == "local"
    # fedavg+ccvr: the update's sum is all FedAvg needs (central); CCVR's statistics are noised by each client
    assert dp.noise_placement(parse_method("fedavg+ccvr+dp")) == "central"


def test_updates_the_method_sees_carry_no_sample_counts() -> None:
    base, updates = make_updates(0)
    seen: list[ClientUpdate] = []
    method = parse_method("fedavg+dp[sigma=0.5]")
    original = method.aggregator.server_step

    def spy(state, ups, ctx):
        seen.extend(ups)
        return original(state, ups, ctx)

    object.__setattr__(method.aggregator, "server_step", spy)
    method.server_step(method.init_state(base), updates, dataclasses.replace(context(), num_clients=3))
    assert [u.num_samples for u in seen] == [1, 1, 1] and all(u.signals == {} for u in seen)


def test_dp_runs_end_to_end_and_table_shows_epsilon(tmp_path, monkeypatch, capsys) -> None:
    import pandas as pd

    from tests._cli import invoke

    tiny = ["--dataset", "synthetic", "--backbone", "livar_micro_vit", "--clients", "3", "--rounds", "2", "--epochs",
            "1", "--lora-rank", "2", "--lora-alpha", "2", "--device", "cpu", "--out", str(tmp_path)]
    methods = ["livar+dp[sigma=1.0,clip=1.0]", "fedavg+dp", "fedavg+ccvr+dp"]
    for spec in methods:
        code, _, err = invoke(["run", "--method", spec, *tiny], monkeypatch, capsys)
        assert code == 0, err
    tidy = pd.concat([pd.read_csv(p) for p in (tmp_path / "runs").glob("*/metrics.csv")])
    eps = tidy[(tidy["split"] == "privacy") & (tidy["metric"] == "epsilon")]
    assert sorted(eps["round"].unique()) == [1, 2]
    livar = eps[eps["method"] == "livar+dp"].sort_values("round")["value"].tolist()
    z = 1.0 / math.sqrt(6)  # update, 4 class-statistics parts and the signals, all at sigma 1
    assert livar == pytest.approx([epsilon(PrivacyModel(3, local=True), z, t, 1e-5) for t in (1, 2)])
    code, out, err = invoke(["table", "--out", str(tmp_path), "--split", "privacy", "--metric", "epsilon",
                             "--cols", "dataset"], monkeypatch, capsys)
    assert code == 0, err
    assert "FedAvg + DP" in out and "LIVAR + DP" in out and "CCVR + DP" in out and "Epsilon" in out
