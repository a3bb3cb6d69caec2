"""FedAvg maths and the federation loop: stored files, skip on rerun, resume after interruption, cleanup."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from livar_bench.config import make_spec
from livar_bench.errors import BenchError, DivergedError
from livar_bench.federation import run_federation
from livar_bench.methods import ClientUpdate, FedAvg, RoundContext
from livar_bench.store import RunStore

TIDY_COLUMNS = ["run_id", "method", "dataset", "backbone", "alpha", "num_clients", "seed", "round", "split",
                "metric", "value"]

# --- FedAvg ----------------------------------------------------------------------------------------


def _update(cid: int, n: int, params: dict[str, torch.Tensor]) -> ClientUpdate:
    return ClientUpdate(client_id=cid, num_samples=n, class_counts=torch.zeros(2, dtype=torch.int64), params=params)


def _ctx() -> RoundContext:
    return RoundContext(round=1, num_rounds=1, num_classes=2, lora_scale=1.0, generator=torch.Generator())


def test_fedavg_two_clients_by_hand():
    # Client 0 has 1 sample, client 1 has 3: weights 1/4 and 3/4.
    p0 = {"m.lora_A": torch.tensor([[1.0, 2.0]]), "m.lora_B": torch.tensor([[2.0], [0.0]]),
          "head.bias": torch.tensor([4.0, -4.0])}
    p1 = {"m.lora_A": torch.tensor([[5.0, 6.0]]), "m.lora_B": torch.tensor([[6.0], [4.0]]),
          "head.bias": torch.tensor([0.0, 8.0])}
    out = FedAvg()({k: torch.zeros_like(v) for k, v in p0.items()}, [_update(0, 1, p0), _update(1, 3, p1)], _ctx())
    assert torch.allclose(out["m.lora_A"], torch.tensor([[4.0, 5.0]]))  # 0.25 * (1, 2) + 0.75 * (5, 6)
    assert torch.allclose(out["m.lora_B"], torch.tensor([[5.0], [3.0]]))
    assert torch.allclose(out["head.bias"], torch.tensor([1.0, 5.0]))
    # Factors are averaged separately: B_avg @ A_avg = [[20, 25], [12, 15]], while the average of the
    # products 0.25 * B0 A0 + 0.75 * B1 A1 = [[23, 28], [15, 18]].
    assert torch.allclose(out["m.lora_B"] @ out["m.lora_A"], torch.tensor([[20.0, 25.0], [12.0, 15.0]]))
    # Inputs are not mutated.
    assert torch.equal(p0["m.lora_A"], torch.tensor([[1.0, 2.0]]))


def test_fedavg_identical_clients_is_a_fixed_point():
    g = torch.Generator().manual_seed(0)
    p = {"m.lora_A": torch.randn(2, 3, generator=g), "m.lora_B": torch.randn(3, 2, generator=g),
         "head.weight": torch.randn(4, 3, generator=g)}
    updates = [_update(k, n, {k2: v.clone() for k2, v in p.items()}) for k, n in enumerate([3, 7, 11])]
    out = FedAvg()(p, updates, _ctx())
    assert all(torch.allclose(out[k], p[k], atol=1e-6) for k in p)


def test_fedavg_order_of_clients_does_not_matter():
    g = torch.Generator().manual_seed(1)
    ups = [_update(k, k + 1, {"x": torch.randn(5, generator=g)}) for k in range(4)]
    a = FedAvg()({"x": torch.zeros(5)}, ups, _ctx())
    b = FedAvg()({"x": torch.zeros(5)}, ups[::-1], _ctx())
    assert torch.allclose(a["x"], b["x"], atol=1e-6)


# --- the federation loop ---------------------------------------------------------------------------


class Interrupt(Exception):
    """Injected after a round's checkpoint is written."""


def _test_rows(frame: pd.DataFrame) -> pd.DataFrame:
    keep = frame[frame["split"].isin(["test", "train"])]
    return keep[["round", "split", "metric", "value"]].sort_values(["round", "split", "metric"]).reset_index(drop=True)


def _no_run_folders(out) -> bool:
    runs = out / "runs"
    return not runs.exists() or not [p for p in runs.iterdir() if not p.name.startswith(".")]


def test_tiny_run_writes_its_folder_and_is_skipped_on_rerun(tmp_path, tiny_spec_values):
    spec = make_spec(tiny_spec_values)
    outcome = run_federation(spec, tmp_path)
    run_dir = tmp_path / "runs" / spec.run_id
    assert outcome.run_dir == run_dir and not outcome.skipped
    for name in ("spec.json", "env.json", "partition.json", "metrics.csv", "DONE"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "checkpoint.pt").exists()
    assert not (tmp_path / "runs" / ".partial" / spec.run_id).exists()
    stored = json.loads((run_dir / "spec.json").read_text())
    assert stored["run_id"] == spec.run_id and stored["seed"] == 0
    env = json.loads((run_dir / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    part = json.loads((run_dir / "partition.json").read_text())
    assert sum(part["sizes"]) == 600 and len(part["sizes"]) == 3
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert set(TIDY_COLUMNS) <= set(metrics.columns)
    assert (metrics["run_id"] == spec.run_id).all() and (metrics["dataset"] == "synthetic").all()
    test = metrics[(metrics["split"] == "test") & (metrics["metric"] == "acc")]
    assert sorted(test["round"]) == [0, 1, 2]
    assert test["value"].between(0, 1).all()
    assert outcome.final["acc"] == pytest.approx(test[test["round"] == 2]["value"].item())

    events = []
    again = run_federation(spec, tmp_path, on_event=lambda e, **k: events.append(e))
    assert again.skipped and "client" not in events
    assert again.final["acc"] == pytest.approx(outcome.final["acc"])


@pytest.mark.parametrize("method", ["fedavg", "fedavgm", "fedadam[eta=0.05]", "livar+ccvr", "fedex_lora", "fedsa_lora",
                                    "dare_ties", "regmean", "fisher_merging", "knots", "scaffold", "rolora"])
def test_resume_after_interruption_gives_identical_metrics(tmp_path, tiny_spec_values, method):
    """Bit-identical on CPU, for stateful methods too (their server buffers are in the checkpoint)."""
    spec = make_spec({**tiny_spec_values, "rounds": 3, "method": method})
    straight = run_federation(spec, tmp_path / "a")

    def interrupt_after_round_1(event: str, **info) -> None:
        if event == "round" and info["round"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_federation(spec, tmp_path / "b", on_event=interrupt_after_round_1)
    partial = tmp_path / "b" / "runs" / ".partial" / spec.run_id
    assert (partial / "checkpoint.pt").is_file()  # kept so that the rerun can resume
    assert not RunStore(tmp_path / "b").is_done(spec.run_id)

    events: list[tuple[str, dict]] = []
    resumed = run_federation(spec, tmp_path / "b", on_event=lambda e, **k: events.append((e, k)))
    assert ("resume", {"run_id": spec.run_id, "round": 1}) in events
    rounds_trained = sorted({k["round"] for e, k in events if e == "client"})
    assert rounds_trained == [2, 3]
    a = _test_rows(pd.read_csv(straight.run_dir / "metrics.csv"))
    b = _test_rows(pd.read_csv(resumed.run_dir / "metrics.csv"))
    pd.testing.assert_frame_equal(a, b)


def test_diverged_run_leaves_nothing_behind(tmp_path, tiny_spec_values):
    spec = make_spec({**tiny_spec_values, "lr": 1e30, "rounds": 1})
    with pytest.raises(DivergedError):
        run_federation(spec, tmp_path)
    assert _no_run_folders(tmp_path)
    assert not (tmp_path / "runs" / ".partial" / spec.run_id).exists()
    assert not RunStore(tmp_path).is_done(spec.run_id)


def test_more_clients_than_samples_fails_before_writing(tmp_path, tiny_spec_values):
    spec = make_spec({**tiny_spec_values, "max_train_samples": 20, "num_clients": 21, "min_client_samples": 1})
    with pytest.raises(BenchError, match="fewer --clients"):
        run_federation(spec, tmp_path)
    assert _no_run_folders(tmp_path)
    assert not (tmp_path / "runs" / ".partial" / spec.run_id).exists()



def test_failed_forced_rerun_keeps_the_finished_result(tmp_path, tiny_spec_values):
    spec = make_spec(tiny_spec_values)
    first = run_federation(spec, tmp_path)
    before = (first.run_dir / "metrics.csv").read_text()

    def boom(event, **info):
        if event == "client":
            raise DivergedError("injected failure")

    with pytest.raises(DivergedError):
        run_federation(spec, tmp_path, force=True, on_event=boom)
    assert (first.run_dir / "DONE").is_file()
    assert (first.run_dir / "metrics.csv").read_text() == before
    again = run_federation(spec, tmp_path, force=True)
    assert not again.skipped and (again.run_dir / "DONE").is_file()
    assert not any((tmp_path / "runs" / ".partial").glob(f"{spec.run_id}*"))


@pytest.mark.parametrize("pack", [None, 3], ids=["sequential", "packed"])
def test_bf16_autocast_path_runs_on_cpu(tmp_path, tiny_spec_values, pack):
    """The precision used on CUDA (bf16 autocast) exercised on the CPU: every signal and stage must cope
    with bf16 activations, and the loss must stay finite."""
    spec = make_spec({**tiny_spec_values, "precision": "bf16", "method": "livar+ccvr", "pack": pack})
    outcome = run_federation(spec, tmp_path)
    frame = pd.read_csv(outcome.run_dir / "metrics.csv")
    values = frame[frame["split"].isin(["test", "train"])]["value"]
    assert values.notna().all() and torch.isfinite(torch.tensor(values.to_numpy())).all()
    assert 0.0 <= outcome.final["acc"] <= 1.0
