"""benchmarks/truncation_loss.py: the figures the product-space cards quote come from a script that runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from livar_bench.methods import fedavg, merge
from livar_bench.ops.lora import to_factors

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "truncation_loss.py"



@pytest.mark.slow
def test_truncation_drops_little_of_an_average_and_much_of_ties(capsys) -> None:
    spec = importlib.util.spec_from_file_location("truncation_loss", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shares = module.main(["--clients", "3", "--samples", "120"])
    assert fedavg.to_factors is to_factors and merge.to_factors is to_factors  # restored
    mean = {name: sum(v) / len(v) for name, v in shares.items()}
    assert all(0.0 <= s <= 1.0 for v in shares.values() for s in v)
    # an average of a few rank-r updates is nearly rank r; TIES' trimmed, sign-elected merge is not
    assert mean["ties[space=product]"] > 2 * mean["fedavg[space=product]"]
    assert "truncation drops" in capsys.readouterr().out
