"""The README's "Adding a method" snippets run as printed, and the new method is a full citizen."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import torch
from typer.testing import CliRunner

from livar_bench.cli import app
from livar_bench.methods import display_name, parse_method, registry
from tests.methods._fakes import context, make_updates

README = Path(__file__).resolve().parents[1] / "README.md"


def snippets() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Adding a method"):]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_adding_a_method_runs_as_printed(tmp_path, monkeypatch) -> None:
    method_file, registry_lines = snippets()[:2]
    assert method_file.startswith("# livar_bench/methods/median.py")
    module = types.ModuleType("livar_bench.methods.median")  # the file the README tells you to write
    exec(compile(method_file, "livar_bench/methods/median.py", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "livar_bench.methods.median", module)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # undone after the test
    exec(compile(registry_lines, "livar_bench/methods/__init__.py", "exec"), {"register": registry.register})

    params, updates = make_updates()
    out = parse_method("median").aggregate(params, updates, context())
    expected = torch.stack([u.params["head.bias"] for u in updates]).median(dim=0).values
    assert torch.equal(out["head.bias"], expected)
    assert display_name("median+ccvr") == "Median + CCVR"
    result = CliRunner().invoke(app, [
        "run", "--method", "median", "--dataset", "synthetic", "--backbone", "livar_micro_vit", "--clients", "3",
        "--rounds", "1", "--epochs", "1", "--lora-rank", "2", "--device", "cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "median on synthetic: final test acc" in result.output
