"""``livar-bench report``: one self-contained HTML page, checked as Chromium renders it (headless, printed to PDF
and read back with pdftotext), plus a screenshot for a person to look at."""

from __future__ import annotations

import html.parser
import re
import shutil
import subprocess

import pytest

from livar_bench import reporting as rp
from livar_bench.experiments import sweep as sw
from livar_bench.experiments.executors import LocalExecutor
from tests._cli import assert_user_error, invoke

MICRO = dict(backbone="livar_micro_vit", num_clients=3, rounds=2, local_epochs=1, batch_size=32, lr=3e-3,
             lora_rank=2, lora_alpha=2.0, device="cpu", dataset="synthetic")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LABELS = {"fedavg": "FedAvg", "livar": "LIVAR"}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """2 methods x 2 alphas x 2 seeds, 2 rounds each (the page's tables, intervals and both plots have data)."""
    out = tmp_path_factory.mktemp("report")
    specs = sw.expand(sw.parse_sweep({"grid": {"methods": list(LABELS), "alphas": [0.5, 1.0], "seeds": [0, 1]},
                                      "base": MICRO}))
    LocalExecutor().run(specs, out)
    return out


class Tables(html.parser.HTMLParser):
    """The page's tables as lists of rows of cell texts, and every src/href attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_report_page_holds_tables_plots_and_provenance(results, monkeypatch, capsys):
    code, stdout, err = invoke(["report", "--out", str(results)], monkeypatch, capsys)
    assert code == 0, err
    page = (results / "report.html").read_text()
    parsed = Tables()
    parsed.feed(page)
    main, paired, costs, runs = parsed.tables
    tidy = rp.collect(results)
    finals = rp.final_values(tidy)
    # the results table: one row per method, one column per (dataset, alpha), mean ± std in percent
    assert [row[0] for row in main[1:]] == list(LABELS.values())
    assert main[0] == ["Method", "Synthetic α=0.5", "Synthetic α=1"]
    for row, method in zip(main[1:], LABELS, strict=True):
        for cell, alpha in zip(row[1:], (0.5, 1.0), strict=True):
            values = finals[(finals["method"] == method) & (finals["alpha"] == alpha)]["value"] * 100
            assert cell == f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"
    # paired differences vs FedAvg, one row per other method and cell, with an interval
    assert sorted((r[0], r[2]) for r in paired[1:]) == [("LIVAR", "0.5"), ("LIVAR", "1")]
    for row in paired[1:]:
        assert re.fullmatch(r"\[-?\d+\.\d\d, -?\d+\.\d\d\]", row[5]), row
    assert [r[0] for r in costs[1:]] == list(LABELS.values())
    # provenance: every run once, with its partition id and versions
    assert sorted(r[0] for r in runs[1:]) == sorted(finals["run_id"])
    assert all(r[9] and r[10] != "–" for r in runs[1:])
    # self-contained: the only sources are embedded images; links point inside the page
    assert all(link.startswith(("data:image/png;base64,", "#")) for link in parsed.links), parsed.links
    assert sum(link.startswith("data:image/png") for link in parsed.links) == 2  # per round, vs alpha
    assert not parsed.tags & {"script", "link", "iframe"}
    assert "wrote" in err and str(results / "report.html") in err


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext is not installed (apt-get install poppler-utils)")
def test_report_renders_in_headless_chromium(results, monkeypatch, capsys, tmp_path):
    code, _, err = invoke(["report", "--out", str(results)], monkeypatch, capsys)
    assert code == 0, err
    url = (results / "report.html").resolve().as_uri()
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    pdf, png = tmp_path / "report.pdf", tmp_path / "report.png"
    subprocess.run([*flags, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", url], capture_output=True, timeout=120,
                   check=True)
    subprocess.run([*flags, "--window-size=1300,2600", f"--screenshot={png}", url], capture_output=True, timeout=120,
                   check=True)
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    lines = [" ".join(line.split()) for line in text.splitlines()]
    for label in LABELS.values():  # each method's row of the results table, as rendered
        assert any(re.fullmatch(rf"{label} \d+\.\d\d ± \d+\.\d\d \d+\.\d\d ± \d+\.\d\d", line) for line in lines), \
            f"{label} row not rendered:\n{text[:3000]}"
    for heading in ("Results", "Paired differences vs FedAvg", "Costs", "Plots", "Provenance"):
        assert heading in lines, heading
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000


def test_report_bad_inputs_write_nothing(tmp_path, monkeypatch, capsys, results):
    code, _, err = invoke(["report", "--out", str(tmp_path)], monkeypatch, capsys)
    assert_user_error(code, err, tmp_path, "no finished runs")
    assert not (tmp_path / "report.html").exists()
    before = (results / "report.html").stat().st_mtime_ns if (results / "report.html").exists() else None
    for args, needle in ((["--metric", "nope"], "no test metric 'nope'"), (["--vs", "ties"], "baseline 'ties'")):
        code, _, err = invoke(["report", "--out", str(results), *args], monkeypatch, capsys)
        assert code == 2 and needle in err, err
    after = (results / "report.html").stat().st_mtime_ns if (results / "report.html").exists() else None
    assert before == after
