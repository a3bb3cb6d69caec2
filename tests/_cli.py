"""Shared test helper: run ``livar-bench ARGS`` in-process through the console entry point, and check the
bad-input contract (exit 2, one ``error:`` line, nothing half-written)."""

from __future__ import annotations

import sys
from pathlib import Path

from livar_bench.cli import main

QUICK = ["--dataset", "digits", "--backbone", "livar_micro_vit", "--epochs", "1", "--max-train-samples", "120",
         "--max-test-samples", "60", "--lora-rank", "2", "--lora-alpha", "2", "--device", "cpu", "--batch-size", "32"]


def invoke(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Run ``livar-bench ARGS`` through the console entry point; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["livar-bench", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def run_folders(out: Path) -> list[Path]:
    runs = out / "runs"
    if not runs.is_dir():
        return []
    partial = runs / ".partial"
    found = [p for p in runs.iterdir() if not p.name.startswith(".")]
    return found + (list(partial.iterdir()) if partial.is_dir() else [])


def assert_user_error(code: int, err: str, out_dir: Path, *needles: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert run_folders(out_dir) == []  # nothing half-written
    return errors[0]
