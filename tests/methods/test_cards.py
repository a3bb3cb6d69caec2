"""Every method's card lists every hyperparameter with its declared help, so cards cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from livar_bench.methods import entries
from livar_bench.methods.cards import ROOT, stale, table
from livar_bench.methods.hyperparameters import render

ENTRIES = entries()


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_card_lists_every_hyperparameter_with_its_help(entry) -> None:
    card = ROOT / entry.card / "README.md"
    assert card.is_file(), f"{entry.name} has no card at {card}"
    rows = [line for line in card.read_text().splitlines() if line.startswith(f"| `{entry.name}` |")]
    keys = [row.split("|")[2].strip().strip("`") for row in rows]
    assert keys == [h.name for h in entry.hyperparameters()]  # each one, once, in declaration order
    for row, h in zip(rows, entry.hyperparameters(), strict=True):
        cells = [c.strip() for c in row.replace("\\|", "\0").split("|")[1:-1]]
        assert cells[2] == render(h.default), (entry.name, h.name)
        assert cells[4].replace("\0", "|") == h.help, (entry.name, h.name)
    if not entry.hyperparameters():
        assert f"`{entry.name}` has no hyperparameters." in card.read_text()


def test_generated_tables_are_current() -> None:
    assert stale() == [], "run: python -m livar_bench.methods.cards"


def test_a_changed_declaration_makes_its_card_stale(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "clip").mkdir()
    text = (ROOT / "clip" / "README.md").read_text()
    (tmp_path / "clip" / "README.md").write_text(text.replace(table("clip"), table("clip").replace("1.0", "2.0")))
    assert tmp_path / "clip" / "README.md" in stale(tmp_path)
