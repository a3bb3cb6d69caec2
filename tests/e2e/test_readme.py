"""The README's "Adding a method" snippets run as printed, and the new methods are full citizens."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from livar_bench.cli import app
from livar_bench.methods import display_name, get_entry, parse_method, registry
from tests.methods import test_contract
from tests.methods._fakes import context, make_updates

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TINY = ["--dataset", "synthetic", "--backbone", "livar_micro_vit", "--clients", "3", "--rounds", "2", "--epochs", "1",
        "--lora-rank", "2", "--device", "cpu"]


def snippets() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Adding a method"):]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def load(source: str, module_name: str, monkeypatch) -> None:
    """Execute a README snippet as the module it says it is (undone after the test)."""
    module = types.ModuleType(module_name)
    exec(compile(source, module_name.replace(".", "/") + ".py", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, module_name, module)


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_the_walk_through_is_the_registered_method(scratch_registry, monkeypatch, tmp_path) -> None:
    """The stateful example is the file in the package, its registry lines are the registry's, and
    executed from the README (in place of the package's) both names pass the contract suite."""
    method_file, registry_lines = snippets()[:2]
    assert method_file == (ROOT / "livar_bench" / "methods" / "fedams.py").read_text()
    init = (ROOT / "livar_bench" / "methods" / "__init__.py").read_text().splitlines()
    assert all(line in init for line in registry_lines.splitlines())
    for name in ("fedams", "fedamsgrad"):
        registry._REGISTRY.pop(name)
    load(method_file, "livar_bench.methods.fedams", monkeypatch)
    exec(compile(registry_lines, "livar_bench/methods/__init__.py", "exec"), {"register": registry.register})
    assert get_entry("fedamsgrad").cls is sys.modules["livar_bench.methods.fedams"].FedAMS
    for name in ("fedams", "fedamsgrad"):
        for check in (test_contract.test_inputs_not_mutated, test_contract.test_client_order_does_not_matter,
                      test_contract.test_deterministic_under_a_fixed_generator,
                      test_contract.test_resume_from_a_saved_state_is_exact,
                      test_contract.test_declared_signals_are_enough_and_needed,
                      test_contract.test_every_hyperparameter_is_described,
                      test_contract.test_hyperparameters_have_defaults_and_render):
            check(name)
        test_contract.test_output_matches_input_layout(name, torch.float32)
    result = CliRunner().invoke(app, ["run", "--method", "fedamsgrad[eta=0.03]+ccvr", *TINY, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "fedamsgrad[eta=0.03]+ccvr on synthetic: final test acc" in result.output
    listed = json.loads(CliRunner().invoke(app, ["ls", "methods", "--format", "json"]).output)
    grad = next(m for m in listed if m["name"] == "fedamsgrad")
    assert [(h["name"], h["default"]) for h in grad["hyperparameters"]][3:5] == [("vhat_init", 0.0), ("eps", 0.001)]


def test_the_stateless_example_runs_as_printed(scratch_registry, monkeypatch, tmp_path) -> None:
    method_file, registry_lines = snippets()[2:4]
    assert method_file.startswith("# livar_bench/methods/median.py")
    load(method_file, "livar_bench.methods.median", monkeypatch)
    exec(compile(registry_lines, "livar_bench/methods/__init__.py", "exec"), {"register": registry.register})

    params, updates = make_updates()
    out = parse_method("median").aggregate(params, updates, context())
    expected = torch.stack([u.params["head.bias"] for u in updates]).median(dim=0).values
    assert torch.equal(out["head.bias"], expected)
    assert display_name("median+ccvr") == "Median + CCVR"
    result = CliRunner().invoke(app, ["run", "--method", "median", *TINY, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "median on synthetic: final test acc" in result.output


def test_the_error_line_quoted_in_the_readme_is_the_real_one() -> None:
    from livar_bench.errors import BenchError

    quoted = re.search(r"`fedams\[beta1=2\]`: `(.*?)`\)", " ".join(README.read_text().split())).group(1)
    with pytest.raises(BenchError) as err:
        parse_method("fedams[beta1=2]")
    assert str(err.value) == quoted
