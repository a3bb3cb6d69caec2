"""Every module of the package is small enough to read in one sitting (issue 18: none over 400 lines)."""

from __future__ import annotations

from pathlib import Path

import livar_bench

LIMIT = 400


def test_no_module_is_over_400_lines() -> None:
    root = Path(livar_bench.__file__).parent
    long = {str(p.relative_to(root.parent)): n for p in sorted(root.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > LIMIT}
    assert not long, f"modules over {LIMIT} lines (split them by responsibility): {long}"
