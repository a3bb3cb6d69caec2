"""Reporting on hand-built tidy frames: last-round values, mean ± std, pooling checks, renderers, published CSV."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livar_bench import reporting as rp
from livar_bench.errors import BenchError


def tidy_rows(method, dataset, alpha, seed, values, metric="acc", partition_id=None, run_id=None):
    """Tidy rows of one run: ``values`` are the test metric at rounds 0, 1, ..."""
    run_id = run_id or f"{method}-{dataset}-{alpha}-{seed}"
    partition_id = partition_id or f"p-{dataset}-{alpha}-{seed}"
    return [dict(run_id=run_id, method=method, dataset=dataset, backbone="b", partition="dirichlet", alpha=alpha,
                 num_clients=4, seed=seed, partition_id=partition_id, round=r, split="test", metric=metric, value=v)
            for r, v in enumerate(values)]


def hand_frame() -> pd.DataFrame:
    rows = []
    # final values (last round) per method, alpha and seed; hand-computed means below
    finals = {("fedavg", 0.1): (0.50, 0.70), ("fedavg", 1.0): (0.80, 0.80),
              ("livar", 0.1): (0.60, 0.80), ("livar", 1.0): (0.70, 0.90)}
    for (method, alpha), values in finals.items():
        for seed, v in enumerate(values):
            rows += tidy_rows(method, "digits", alpha, seed, [0.1, 0.3, v])
    return pd.DataFrame(rows)


def test_final_values_take_each_runs_last_round():
    frame = pd.DataFrame(tidy_rows("fedavg", "d", 0.1, 0, [0.1, 0.9, 0.4]) + tidy_rows("fedavg", "d", 0.1, 1, [0.2, 0.6]))
    finals = rp.final_values(frame).sort_values("seed")
    assert finals["value"].tolist() == [0.4, 0.6]
    assert finals["round"].tolist() == [2, 1]
    with pytest.raises(BenchError, match="available: acc"):
        rp.final_values(frame, metric="f1")


def test_summary_is_mean_and_sample_std_over_seeds():
    summary = rp.summarize(rp.final_values(hand_frame()), ("method", "alpha")).set_index(["method", "alpha"])
    assert summary.loc[("fedavg", 0.1), "mean"] == pytest.approx(0.60)
    assert summary.loc[("fedavg", 0.1), "std"] == pytest.approx(np.sqrt(0.02))  # (0.1^2 + 0.1^2) / (2 - 1)
    assert summary.loc[("fedavg", 1.0), "std"] == pytest.approx(0.0)
    assert summary.loc[("livar", 1.0), "n"] == 2 and summary.loc[("livar", 1.0), "seeds"] == "0,1"


def test_markdown_round_trips_through_pandas_with_best_in_bold():
    pivot = rp.make_pivot(rp.final_values(hand_frame()), ["method"], ["dataset", "alpha"])
    text = rp.to_markdown(pivot)
    assert "n = 2 seeds" in text and "Top-1 test accuracy (%) after the last round" in text
    table_lines = [line for line in text.splitlines() if line.startswith("|") and not line.startswith("|---")]
    frame = pd.read_csv(io.StringIO("\n".join(table_lines)), sep="|", skipinitialspace=True).iloc[:, 1:-1]
    frame.columns = [c.strip() for c in frame.columns]
    frame = frame.apply(lambda col: col.str.strip())
    assert list(frame.columns) == ["Method", "Digits α=0.1", "Digits α=1"]
    cells = frame.set_index("Method")
    # alpha 0.1: livar 70 beats fedavg 60; alpha 1: both have mean 80
    assert cells.loc["LIVAR", "Digits α=0.1"] == "**70.00 ± 14.14**"
    assert cells.loc["FedAvg", "Digits α=0.1"] == "60.00 ± 14.14"
    assert cells.loc["FedAvg", "Digits α=1"] == "**80.00 ± 0.00**"  # equal means at display precision: both bold
    assert cells.loc["LIVAR", "Digits α=1"] == "**80.00 ± 14.14**"
    assert list(cells.index) == ["FedAvg", "LIVAR"]  # default order: baselines first


def _unescaped_ampersands(line: str) -> int:
    return len(re.findall(r"(?<!\\)&", line))


def test_latex_is_booktabs_with_balanced_columns():
    frame = pd.concat([hand_frame(), pd.DataFrame(tidy_rows("fedavg", "cifar100", 0.1, 0, [0.1, 0.2]))])
    frame = pd.concat([frame, pd.DataFrame(tidy_rows("livar", "cifar100", 0.1, 0, [0.1, 0.3], partition_id="p-cifar100-0.1-0"))])
    pivot = rp.make_pivot(rp.final_values(frame), ["method"], ["dataset", "alpha"], style=rp.Style(
        method_order=("livar", "fedavg"), labels={**rp.DEFAULT_LABELS, "livar": "LIVAR_ours & co"}))
    text = rp.to_latex(pivot)
    lines = text.splitlines()
    assert r"\begin{tabular}{lccc}" in text
    top, mid, bottom = lines.index(r"\toprule"), lines.index(r"\midrule"), lines.index(r"\bottomrule")
    assert top < mid < bottom and lines[bottom + 1] == r"\end{tabular}"
    for line in lines[top + 1:bottom]:
        if line.startswith(r"\cmidrule") or line == r"\midrule":
            continue
        spans = sum(int(s) for s in re.findall(r"\\multicolumn\{(\d+)\}", line))
        n_multi = len(re.findall(r"\\multicolumn", line))
        assert _unescaped_ampersands(line) + 1 - n_multi + spans == 4, line
    body = lines[mid + 1:bottom]
    assert body[0].startswith(r"LIVAR\_ours \& co")  # custom order and escaped label
    assert r"\multicolumn{2}{c}{Digits}" in text and r"\cmidrule(lr){3-4}" in text  # CIFAR-100 is one column
    assert lines[lines.index(r"\toprule") + 1].startswith(" & CIFAR-100")  # datasets in paper order
    assert "n given per cell" in text and "(n=1)" in text  # mixed seed counts are shown per cell
    assert r"\textbf{30.00 (n=1)}" in text  # livar 0.3 > fedavg 0.2 on CIFAR-100


def test_lower_is_better_metrics_bold_the_minimum():
    rows = tidy_rows("fedavg", "d", 0.1, 0, [3.0, 1.0], metric="loss") + tidy_rows("livar", "d", 0.1, 0, [3.0, 2.0], metric="loss")
    pivot = rp.make_pivot(rp.final_values(pd.DataFrame(rows), metric="loss"), ["method"], ["alpha"], metric="loss")
    assert pivot.best()[pivot.best().columns[0]].tolist() == [True, False]
    assert "1.00" in rp.to_markdown(pivot)  # not scaled to percent


def test_pooling_refuses_two_runs_in_one_cell_and_seed():
    frame = hand_frame()
    extra = pd.DataFrame(tidy_rows("fedavg", "digits", 0.1, 0, [0.1, 0.2], run_id="other-lr"))
    with pytest.raises(BenchError, match="2 runs fall into one table cell") as err:
        rp.make_pivot(rp.final_values(pd.concat([frame, extra])), ["method"], ["dataset", "alpha"])
    # plain values, not numpy reprs such as np.float64(0.1)
    assert "'alpha': 0.1, 'seed': 0}" in str(err.value) and "np." not in str(err.value)


def test_pooling_refuses_methods_on_different_partitions():
    frame = hand_frame()
    frame.loc[(frame["method"] == "livar") & (frame["alpha"] == 0.1) & (frame["seed"] == 1), "partition_id"] = "other"
    with pytest.raises(BenchError, match="different partitions") as err:
        rp.make_pivot(rp.final_values(frame), ["method"], ["dataset", "alpha"])
    assert "alpha=0.1, seed=1" in str(err.value) and "np." not in str(err.value)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=6, max_size=6),
       st.lists(st.floats(0, 1, allow_nan=False), min_size=6, max_size=6))
def test_bold_cell_has_the_largest_mean_of_its_column(a, b):
    rows = []
    for i, method in enumerate(["fedavg", "ties", "livar"]):
        for seed in (0, 1):
            rows += tidy_rows(method, "d", 0.1, seed, [a[2 * i + seed]]) + tidy_rows(method, "d", 1.0, seed, [b[2 * i + seed]])
    pivot = rp.make_pivot(rp.final_values(pd.DataFrame(rows)), ["method"], ["alpha"])
    assert list(pivot.mean.index) == ["fedavg", "ties", "livar"] and list(pivot.mean.columns) == [0.1, 1.0]
    for j, values in enumerate((a, b)):
        means = np.array(values).reshape(3, 2).mean(axis=1)
        best = pivot.best().iloc[:, j].to_numpy()
        shown = np.round(means * 100, 2)
        assert best[np.argmax(means)]  # the best mean is always bold
        assert all(shown[i] >= shown.max() - 0.01 for i in np.flatnonzero(best))  # and only ties with it are


def test_csv_export_round_trips():
    pivot = rp.make_pivot(rp.final_values(hand_frame()), ["method"], ["alpha"])
    frame = rp.to_csv_frame(pivot)
    back = pd.read_csv(io.StringIO(frame.to_csv(index=False)))
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    row = back[(back["method"] == "livar") & (back["alpha"] == 1.0)].iloc[0]
    assert row["mean"] == pytest.approx(80.0) and row["n"] == 2 and row["unit"] == "percent"


def test_published_csv_is_validated(tmp_path):
    header = ",".join(rp.PUBLISHED_COLUMNS) + "\n"
    empty = tmp_path / "empty.csv"
    empty.write_text(header)
    assert rp.load_published(empty).empty
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("method,dataset,acc\nlivar,cifar100,90\n")
    with pytest.raises(BenchError, match="missing alpha,metric,value,source; unexpected acc"):
        rp.load_published(wrong)
    bad = tmp_path / "bad.csv"
    bad.write_text(header + "livar,cifar100,0.1,acc,ninety,Table 1\n")
    with pytest.raises(BenchError, match="line 2"):
        rp.load_published(bad)
    fraction = tmp_path / "fraction.csv"
    fraction.write_text(header + "livar,cifar100,0.1,acc,190,Table 1\n")
    with pytest.raises(BenchError, match="percent"):
        rp.load_published(fraction)
    with pytest.raises(BenchError, match="not found"):
        rp.load_published(tmp_path / "nope.csv")


def test_compare_puts_ours_next_to_published(tmp_path):
    path = tmp_path / "pub.csv"
    path.write_text(",".join(rp.PUBLISHED_COLUMNS) + "\nLIVAR,digits,0.1,acc,65.5,made-up test row\n")
    ours = rp.ours_summary({"acc": rp.final_values(hand_frame())})
    table = rp.compare_frame(ours, rp.load_published(path))
    row = table[(table["method"] == "livar") & (table["alpha"] == 0.1)].iloc[0]
    assert row["mean"] == pytest.approx(70.0) and row["published"] == 65.5 and row["diff"] == pytest.approx(4.5)
    assert len(table) == 4  # every one of ours is listed, matched or not
    assert rp.format_pm(70.0, 1.234, 2) == "70.00 ± 1.23 (n=2)"


def test_collect_keeps_all_digit_ids_as_text(tmp_path):
    for run_id in ("000000000001", "012345678901"):
        folder = tmp_path / "runs" / run_id
        folder.mkdir(parents=True)
        frame = pd.DataFrame(tidy_rows("fedavg", "d", 0.1, int(run_id[-1]), [0.1, 0.5], run_id=run_id,
                                       partition_id="000000000042"))
        frame.to_csv(folder / "metrics.csv", index=False)
        (folder / "spec.json").write_text(f'{{"run_id": "{run_id}", "lr": 0.1}}')
        (folder / "DONE").write_text("ok\n")
    (tmp_path / "runs" / ".partial" / "ffffffffffff").mkdir(parents=True)  # in progress: never read
    tidy = rp.collect(tmp_path)
    assert sorted(tidy["run_id"].unique()) == ["000000000001", "012345678901"]
    assert set(tidy["partition_id"]) == {"000000000042"}
    assert list(rp.run_settings(tmp_path, ["012345678901"]).index) == ["012345678901"]
    with pytest.raises(BenchError, match="no finished runs"):
        rp.collect(tmp_path / "empty")


def test_latex_compiles_when_pdflatex_is_installed(tmp_path):
    import shutil
    import subprocess

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
    frame = pd.concat([hand_frame(), pd.DataFrame(tidy_rows("livar+ccvr", "digits", 0.1, 0, [0.2, 0.9]))])
    pivot = rp.make_pivot(rp.final_values(frame), ["method"], ["dataset", "alpha"], style=rp.Style(
        labels={**rp.DEFAULT_LABELS, "livar": "LIVAR_ours & 100% #1"}))
    doc = "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + rp.to_latex(pivot) + "\\end{document}\n"
    (tmp_path / "t.tex").write_text(doc)
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "t.pdf").stat().st_size > 1000


def test_caption_names_the_split_and_bytes_are_lower_is_better() -> None:
    import pandas as pd

    from livar_bench.reporting import make_pivot, to_markdown

    def finals(split: str, metric: str, values: list[float]) -> pd.DataFrame:
        return pd.DataFrame({"run_id": [f"r{i}" for i in range(len(values))], "method": ["fedavg", "flora"],
                             "dataset": "digits", "alpha": 0.1, "num_clients": 4, "backbone": "b", "seed": 0,
                             "partition_id": "p", "split": split, "metric": metric, "value": values})

    local = to_markdown(make_pivot(finals("test_local", "acc", [0.5, 0.6]), ["method"], ["dataset", "alpha"],
                                   metric="acc"))
    assert local.startswith("_Personalised accuracy (%)") and "60.00" in local
    cost = to_markdown(make_pivot(finals("cost", "download_bytes_per_client", [10.0, 20.0]), ["method"],
                                  ["dataset", "alpha"], metric="download_bytes_per_client"))
    assert "**10.00" in cost and "**20.00" not in cost  # fewer bytes is better
