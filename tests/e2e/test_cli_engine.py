"""``run --engine``: the engine option, and ``--engine flower`` without Flower installed.

These run whether or not flwr is installed (its absence is simulated where it is).
"""

from __future__ import annotations

import sys

import pytest

from livar_bench.errors import BenchError
from tests._cli import assert_user_error, invoke


def test_missing_flwr_is_one_line_naming_the_extra(monkeypatch):
    from livar_bench.flower import require_flwr

    monkeypatch.setitem(sys.modules, "flwr", None)  # `import flwr` now raises ImportError
    with pytest.raises(BenchError, match=r"pip install 'livar-bench\[flower\]'"):
        require_flwr()


def test_cli_engine_flower_without_flwr_fails_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "flwr", None)
    code, _, err = invoke(["run", "--engine", "flower", "--dataset", "synthetic", "--backbone", "livar_micro_vit",
                           "--clients", "2", "--rounds", "1", "--device", "cpu", "--out", str(tmp_path)],
                          monkeypatch, capsys)
    assert_user_error(code, err, tmp_path, "livar-bench[flower]")


def test_cli_unknown_engine(tmp_path, monkeypatch, capsys):
    code, _, err = invoke(["run", "--engine", "grpc", "--dataset", "synthetic", "--out", str(tmp_path)],
                          monkeypatch, capsys)
    assert_user_error(code, err, tmp_path, "unknown engine", "local", "flower")
