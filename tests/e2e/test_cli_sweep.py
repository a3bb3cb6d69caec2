"""End-to-end sweeps on the synthetic dataset: interruption and resume, reruns, locks, table/plot/compare CLI."""

from __future__ import annotations

import io
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from livar_bench import reporting as rp
from livar_bench.cli import app, main
from livar_bench.experiments import sweep as sw
from livar_bench.experiments.executors import LocalExecutor
from livar_bench.reporting import plots as rp_plots
from livar_bench.store import RunStore
from tests._faults import Injected, Recorder

REPO = Path(__file__).resolve().parents[2]
MICRO = dict(backbone="livar_micro_vit", num_clients=3, rounds=2, local_epochs=1, batch_size=32, lr=3e-3,
             lora_rank=2, lora_alpha=2.0, device="cpu")
GRID = dict(datasets=["synthetic"], methods=["fedavg", "fedprox", "livar"], alphas=[0.5, 1.0], seeds=[0, 1])


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """3 methods x 2 alphas x 2 seeds, crashed in the 5th run after its first round, then rerun to completion."""
    out = tmp_path_factory.mktemp("sweep")
    specs = sw.expand(sw.parse_sweep({"grid": GRID, "base": MICRO}))
    crash = Recorder(crash_at=(4, 1))
    with pytest.raises(Injected):
        LocalExecutor().run(specs, out, on_event=crash)
    store = RunStore(out)
    interrupted = specs[4]
    state = {"done_after_crash": len(store.done_ids()),
             "checkpoint": (store.partial_dir(interrupted.run_id) / "checkpoint.pt").is_file()}
    resume = Recorder()
    result = LocalExecutor().run(specs, out, on_event=resume)
    return dict(out=out, specs=specs, resume=resume, result=result, interrupted=interrupted, **state)


def test_crash_then_rerun_completes_the_grid_without_duplicates(swept):
    out, specs = swept["out"], swept["specs"]
    assert len(specs) == 12
    assert swept["done_after_crash"] == 4 and swept["checkpoint"]
    resume = swept["resume"]
    assert [i["run_id"] for i in resume.names("resume")] == [swept["interrupted"].run_id]
    assert resume.names("resume")[0]["round"] == 1
    assert len(resume.names("start")) == 8  # 4 were done; the interrupted one restarts at round 2
    store = RunStore(out)
    assert sorted(store.done_ids()) == sorted(s.run_id for s in specs)
    assert not list((out / "runs" / ".partial").glob("*")) and not list((out / "runs" / ".locks").glob("*"))
    # no empty bookkeeping folders are left behind either
    assert not (out / "runs" / ".partial").exists() and not (out / "runs" / ".locks").exists()
    assert not (out / "cache" / "round1").exists()
    tidy = rp.collect(out)
    assert not tidy.duplicated(["run_id", "round", "split", "metric"]).any()
    acc = tidy[(tidy["split"] == "test") & (tidy["metric"] == "acc")]
    assert (acc.groupby("run_id")["round"].apply(sorted).map(tuple) == (0, 1, 2)).all()


def test_resumed_run_equals_an_uninterrupted_one(swept, tmp_path):
    from livar_bench.federation import run_federation

    spec = swept["interrupted"]
    fresh = run_federation(spec, tmp_path)
    resumed = RunStore(swept["out"]).metrics(spec.run_id)
    uninterrupted = RunStore(tmp_path).metrics(spec.run_id)
    cols = ["round", "split", "metric", "value"]
    pick = lambda f: f[f["split"] != "cost"][cols].reset_index(drop=True)  # noqa: E731 (timings differ)
    pd.testing.assert_frame_equal(pick(resumed), pick(uninterrupted))
    assert fresh.final["acc"] == pytest.approx(swept["result"].outcomes[4].final["acc"])


def test_rerun_does_no_training(swept):
    out = swept["out"]
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/metrics.csv")}
    rec = Recorder()
    result = LocalExecutor().run(swept["specs"], out, on_event=rec)
    assert result.trained == 0 and len(result.outcomes) == 12
    assert not rec.names("start") and not rec.names("run_start") and not rec.names("client")
    assert rec.names("sweep_start")[0]["done"] == 12
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/metrics.csv")} == before


def test_a_locked_run_is_left_to_its_owner(tmp_path):
    specs = sw.expand(sw.parse_sweep({"grid": {"methods": ["fedavg"], "seeds": [0, 1]},
                                      "base": {**MICRO, "dataset": "synthetic", "rounds": 1}}))
    store = RunStore(tmp_path)
    with store.lock(specs[0].run_id) as held:  # this process plays the other sweep, mid-run
        assert held
        rec = Recorder()
        result = LocalExecutor().run(specs, tmp_path, on_event=rec)
    assert result.locked == [specs[0].run_id]
    assert [i["run_id"] for i in rec.names("start")] == [specs[1].run_id]
    assert store.done_ids() == [specs[1].run_id]
    assert LocalExecutor().run(specs, tmp_path).trained == 1  # lock released: the rerun finishes it
    assert sorted(store.done_ids()) == sorted(s.run_id for s in specs)


def _sweep_worker(out: str, log: str) -> None:
    import torch

    torch.set_num_threads(1)
    specs = sw.expand(sw.parse_sweep({"grid": {"methods": ["fedavg"], "seeds": [0, 1, 2, 3]},
                                      "base": {**MICRO, "dataset": "synthetic", "rounds": 1}}))

    def on_event(event: str, **info) -> None:
        if event == "start":
            with open(log, "a") as fh:
                fh.write(info["run_id"] + "\n")

    LocalExecutor().run(specs, out, on_event=on_event)


def test_two_sweep_processes_never_train_the_same_run(tmp_path):
    ctx = multiprocessing.get_context("fork")  # children share the imported modules: no second import cost
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [ctx.Process(target=_sweep_worker, args=(str(tmp_path / "out"), str(log))) for log in logs]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    trained = [log.read_text().split() if log.exists() else [] for log in logs]
    assert not set(trained[0]) & set(trained[1])
    assert len(trained[0]) + len(trained[1]) == 4
    assert len(RunStore(tmp_path / "out").done_ids()) == 4


# --- CLI -------------------------------------------------------------------------------------------

runner = CliRunner()


def test_table_markdown_round_trips_with_real_runs(swept):
    out = swept["out"]
    result = runner.invoke(app, ["table", "--out", str(out), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    path = out / "tables" / "acc_method_by_dataset-alpha.md"
    text = path.read_text()
    assert "Top-1 test accuracy (%) after the last round" in text and "n = 2 seeds" in text
    lines = [line for line in text.splitlines() if line.startswith("|") and not line.startswith("|---")]
    frame = pd.read_csv(io.StringIO("\n".join(lines)), sep="|", skipinitialspace=True).iloc[:, 1:-1]
    frame.columns = [c.strip() for c in frame.columns]
    assert frame["Method"].str.strip().tolist() == ["FedAvg", "FedProx", "LIVAR"]
    assert list(frame.columns[1:]) == ["Synthetic α=0.5", "Synthetic α=1"]
    # every cell is mean ± std of the two seeds' last-round accuracy, recomputed here from the stored metrics
    finals = rp.final_values(rp.collect(out))
    for _, row in frame.iterrows():
        for column, alpha in zip(frame.columns[1:], (0.5, 1.0), strict=True):
            method = {"FedAvg": "fedavg", "FedProx": "fedprox", "LIVAR": "livar"}[row["Method"].strip()]
            values = finals[(finals["method"] == method) & (finals["alpha"] == alpha)]["value"] * 100
            assert row[column].strip().strip("*") == f"{values.mean():.2f} ± {values.std():.2f}"
    assert (out / "tables" / "tidy.csv").is_file() and (out / "tables" / "tidy.parquet").is_file()
    assert len(pd.read_parquet(out / "tables" / "tidy.parquet")) == len(pd.read_csv(out / "tables" / "tidy.csv"))


def test_table_latex_and_csv(swept):
    out = swept["out"]
    assert runner.invoke(app, ["table", "--out", str(out), "--format", "latex", "--rows", "method,alpha",
                               "--cols", "dataset", "--order", "livar,fedavg"]).exit_code == 0
    text = (out / "tables" / "acc_method-alpha_by_dataset.tex").read_text()
    for token in (r"\begin{tabular}{llc}", r"\toprule", r"\midrule", r"\bottomrule", r"\textbf{"):
        assert token in text
    body = text.split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()
    assert len(body) == 6 and body[0].startswith("LIVAR & $\\alpha$=0.5")
    assert all(len(re.findall(r"(?<!\\)&", line)) == 2 for line in body)
    assert runner.invoke(app, ["table", "--out", str(out), "--format", "csv"]).exit_code == 0
    frame = pd.read_csv(out / "tables" / "acc_method_by_dataset-alpha.csv")
    assert len(frame) == 6 and set(frame["n"]) == {2} and frame["metric"].eq("acc").all()
    bad = runner.invoke(app, ["table", "--out", str(out), "--format", "docx"])
    assert "unknown --format" in str(bad.exception)


def test_plots_say_what_bands_and_bars_are(swept, tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(rp_plots, "_save", lambda fig, path: figures.append(fig) or [])
    tidy = rp.collect(swept["out"])
    rp.plot_curves(tidy, tmp_path)
    rp.plot_final_vs_alpha(rp.final_values(tidy), tmp_path)
    titles = [ax.get_legend().get_title().get_text() for fig in figures for ax in fig.axes if ax.get_legend()]
    assert titles == ["line: mean over seeds\nband: ± 1 std over seeds", "mean over seeds\nbars: ± 1 std over seeds"]


def test_plot_writes_png_and_pdf(swept):
    out = swept["out"]
    assert runner.invoke(app, ["plot", "--out", str(out)]).exit_code == 0
    names = {p.name for p in (out / "figures").iterdir()}
    assert {"curves_acc_synthetic.png", "curves_acc_synthetic.pdf", "final_acc_vs_alpha.png",
            "final_acc_vs_alpha.pdf"} <= names
    assert all((out / "figures" / n).stat().st_size > 1000 for n in names)


def test_compare_says_plainly_when_no_numbers(swept, tmp_path, monkeypatch):
    out = swept["out"]
    shipped = REPO / "results" / "paper" / "published.csv"
    assert shipped.read_text().strip() == ",".join(rp.PUBLISHED_COLUMNS)  # header only, by design
    result = runner.invoke(app, ["compare", "--out", str(out), "--published", str(shipped)])
    assert result.exit_code == 0 and "holds only its header" in result.output
    monkeypatch.chdir(tmp_path)  # no results/paper/published.csv here
    result = runner.invoke(app, ["compare", "--out", str(out)])
    assert result.exit_code == 0 and "no published numbers" in result.output
    mine = tmp_path / "mine.csv"
    mine.write_text(",".join(rp.PUBLISHED_COLUMNS) + "\nfedavg,synthetic,0.5,acc,50.0,test row\n")
    result = runner.invoke(app, ["compare", "--out", str(out), "--published", str(mine)])
    assert result.exit_code == 0 and "1 matched" in result.output
    table = pd.read_csv(out / "tables" / "compare.csv")
    row = table[(table["method"] == "fedavg") & (table["alpha"] == 0.5)].iloc[0]
    assert row["diff"] == pytest.approx(row["mean"] - 50.0)


def test_sweep_dry_run_and_missing_data_stop_before_training(tmp_path, monkeypatch, capsys):
    result = runner.invoke(app, ["sweep", "--datasets", "synthetic", "--methods", "fedavg,ties[density=0.5,lam=1.0]",
                                 "--alphas", "0.1,1", "--seeds", "0,1,2", "--out", str(tmp_path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "12 runs" in result.output and result.output.count("alpha=") == 12
    assert not (tmp_path / "runs").exists()
    monkeypatch.setattr(sys, "argv", ["livar-bench", "sweep", "--config", str(REPO / "livar_bench/configs/paper.yaml"),
                                      "--data-root", str(tmp_path), "--out", str(tmp_path)])
    import livar_bench.data
    import livar_bench.experiments.executors

    def never(*args, **kwargs):
        raise AssertionError("a dataset was loaded or a run started although data is missing")

    monkeypatch.setattr(livar_bench.data, "load_dataset", never)
    monkeypatch.setattr(livar_bench.experiments.executors, "run_federation", never)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "data missing for 4 dataset(s)" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_killed_sweep_process_resumes(tmp_path):
    """A real ``livar-bench sweep`` killed with SIGKILL mid-run; the rerun completes the grid."""
    args = ["livar-bench", "sweep", "--datasets", "synthetic", "--methods", "fedavg,fedprox", "--alphas", "0.5",
            "--seeds", "0,1", "--backbone", "livar_micro_vit", "--clients", "3", "--rounds", "3", "--epochs", "1",
            "--lora-rank", "2", "--lora-alpha", "2", "--device", "cpu", "--out", str(tmp_path)]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    for line in proc.stderr:
        if "[2/4]" in line and "round 1" in line:
            proc.kill()
            break
    proc.wait()
    assert len(RunStore(tmp_path).done_ids()) == 1
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming after round 1" in done.stderr and "3 trained, 1 already done" in done.stderr
    tidy = rp.collect(tmp_path)
    assert tidy["run_id"].nunique() == 4 and not tidy.duplicated(["run_id", "round", "split", "metric"]).any()


@pytest.mark.slow
def test_ray_executor_matches_local(tmp_path):
    pytest.importorskip("ray")
    from livar_bench.experiments.executors import RayExecutor

    specs = sw.expand(sw.parse_sweep({"grid": {"methods": ["fedavg", "livar"], "seeds": [0]},
                                      "base": {**MICRO, "dataset": "synthetic"}}))
    local = LocalExecutor().run(specs, tmp_path / "local")
    remote = RayExecutor().run(specs, tmp_path / "ray")
    assert [o.run_id for o in remote.outcomes] == [o.run_id for o in local.outcomes]
    for a, b in zip(local.outcomes, remote.outcomes, strict=True):
        assert a.final["acc"] == pytest.approx(b.final["acc"], abs=1e-6)


def test_table_vs_baseline_prints_paired_differences(swept):
    result = runner.invoke(app, ["table", "--out", str(swept["out"]), "--vs", "fedavg"])
    assert result.exit_code == 0, result.output
    assert "paired differences vs fedavg" in result.output
    assert "livar" in result.output.split("paired differences")[1]


@pytest.mark.parametrize("live", [True, False])
def test_sweep_progress_handles_every_event(tmp_path, live, capsys):
    from livar_bench.cli.sweep import SweepProgress

    specs = sw.expand(sw.parse_sweep({"grid": {"methods": ["fedavg"], "seeds": [0, 1]},
                                      "base": {**MICRO, "dataset": "synthetic", "rounds": 1}}))
    LocalExecutor().run(specs[:1], tmp_path)  # one done before: the display counts it as done
    with SweepProgress(live=live) as progress:
        LocalExecutor().run(specs, tmp_path, on_event=progress)
        assert progress.finished == 2 and progress.eta() == "ETA 0m00s"
    err = capsys.readouterr().err
    assert "sweep: 2 runs, 1 already done" in err
    if not live:
        assert "[2/2] fedavg synthetic α=0.5 seed 1: round 1 acc" in err and "done, acc" in err


def test_table_rows_and_cols_take_any_stored_setting(swept, tmp_path):
    import shutil

    from livar_bench.errors import BenchError

    out = tmp_path / "copy"
    shutil.copytree(swept["out"] / "runs", out / "runs")
    bad = runner.invoke(app, ["table", "--out", str(out), "--cols", "dataset,nope"])
    assert isinstance(bad.exception, BenchError)
    message = str(bad.exception)
    assert "cannot group by 'nope'" in message
    for key in ("pretrained", "image_size", "lr", "local_epochs", "rounds", "lora_rank", "alpha"):
        assert key in message
    assert not (out / "tables").exists()  # nothing written
    good = runner.invoke(app, ["table", "--out", str(out), "--format", "csv", "--rows", "method,lr",
                               "--cols", "pretrained,epochs,alpha"])
    assert good.exit_code == 0, good.output
    frame = pd.read_csv(out / "tables" / "acc_method-lr_by_pretrained-epochs-alpha.csv")
    assert len(frame) == 6 and {"lr", "pretrained", "local_epochs"} <= set(frame.columns)


def test_sweep_takes_the_singular_spellings_of_run(tmp_path):
    # `run --dataset digits --method livar --alpha 0.1 --seed 3`, typed at sweep: the same runs as the plural
    singular = runner.invoke(app, ["sweep", "--dataset", "synthetic", "--method", "fedavg,livar", "--alpha", "0.1",
                                   "--seed", "3", "--out", str(tmp_path), "--dry-run"])
    plural = runner.invoke(app, ["sweep", "--datasets", "synthetic", "--methods", "fedavg,livar", "--alphas", "0.1",
                                 "--seeds", "3", "--out", str(tmp_path), "--dry-run"])
    assert singular.exit_code == 0, singular.output
    ids = re.findall(r"^([0-9a-f]{12})  ", singular.output, flags=re.M)
    assert len(ids) == 2 and ids == re.findall(r"^([0-9a-f]{12})  ", plural.output, flags=re.M)
    assert "seed=3" in singular.output and "alpha=0.1" in singular.output
