"""The hyperparameter table of each method card (``baselines/<card>/README.md``), generated from the classes.

Every card holds, between two marker lines, a table of the hyperparameters of the registered methods
that share it (``@describe(..., card=...)``): key, default, what is allowed and the declared help. The
tables are written from the declarations, so a card cannot drift from its method; the test suite fails
on a stale one. Regenerate after changing a method's fields::

    python -m livar_bench.methods.cards          # rewrite the tables in baselines/*/README.md
    python -m livar_bench.methods.cards --check  # exit 1 and name the stale cards
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from livar_bench.methods.hyperparameters import render

BEGIN = "<!-- hyperparameters: generated from the method classes by `python -m livar_bench.methods.cards` -->"
END = "<!-- end of generated hyperparameters -->"
ROOT = Path(__file__).resolve().parents[2] / "baselines"


def table(card: str) -> str:
    """The generated block (markers included) for the registered entries whose card is ``card``."""
    from livar_bench.methods import entries

    rows = [BEGIN]
    members = [e for e in entries() if e.card == card]
    with_settings = [e for e in members if e.hyperparameters()]
    if with_settings:
        rows += ["| spec | key | default | allowed | help |", "|------|-----|---------|---------|------|"]
        for e in with_settings:
            for h in e.hyperparameters():
                allowed = h.domain.removeprefix("in ")
                rows.append(f"| `{e.name}` | `{h.name}` | {_cell(render(h.default))} | {_cell(allowed)} | {_cell(h.help)} |")
    for e in members:
        if not e.hyperparameters():
            rows.append(f"`{e.name}` has no hyperparameters.")
    rows.append(END)
    return "\n".join(rows)


def cards() -> list[str]:
    """Every card some registered entry points to."""
    from livar_bench.methods import entries

    return sorted({e.card for e in entries()})


def stale(root: Path = ROOT) -> list[Path]:
    """The card files whose generated table is missing or differs from the declarations."""
    out = []
    for card in cards():
        path = root / card / "README.md"
        if not path.is_file() or table(card) not in path.read_text():
            out.append(path)
    return out


def update(root: Path = ROOT) -> list[Path]:
    """Rewrite the generated tables in place; returns the files changed.

    Raises:
        SystemExit: a card is missing or has no marker lines (add them under its "## Hyperparameters").
    """
    changed = []
    for card in cards():
        path = root / card / "README.md"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: write the card (see baselines/fedopt/README.md), then rerun")
        text = path.read_text()
        if BEGIN not in text or END not in text:
            raise SystemExit(f"{path} has no generated table: put the two lines\n{BEGIN}\n{END}\nunder its "
                             "'## Hyperparameters' heading, then rerun")
        head, rest = text.split(BEGIN, 1)
        new = head + table(card) + rest.split(END, 1)[1]
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale cards (exit 1 if any)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the baselines folder")
    args = parser.parse_args(argv)
    if args.check:
        old = stale(args.root)
        for path in old:
            print(f"stale: {path} (run python -m livar_bench.methods.cards)")
        return 1 if old else 0
    for path in update(args.root):
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
