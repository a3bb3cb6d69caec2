"""``livar-bench ls``: list datasets, methods and backbones."""

from __future__ import annotations

import typer
from rich.table import Table

from livar_bench.cli import app
from livar_bench.errors import BenchError


@app.command("ls")
def ls(what: str = typer.Argument(..., help="datasets, methods or backbones")) -> None:
    """List what can be used. Example: livar-bench ls methods"""
    from rich.console import Console

    out = Console(markup=False)
    kind = what.lower().rstrip("s")
    if kind == "dataset":
        from livar_bench.data import DATASETS, HF_HOW

        table = Table("name", "classes", "description", "how to get it")
        for d in DATASETS.values():
            table.add_row(d.name, str(d.num_classes), d.summary, d.how_to_get)
        table.add_row("hf:<source>", "any", "an image-classification dataset in Hugging Face datasets format "
                      "(Image + ClassLabel columns, train/test splits)", HF_HOW)
    elif kind == "method":
        from livar_bench.methods import entries

        table = Table("name", "kind", "client signals", "hyperparameters", "paper", "summary")
        for column in table.columns[2:5]:  # signals, settings and links cut short with "…" are useless
            column.overflow = "fold"
        for e in entries():
            signals = ", ".join(sorted(s.value for s in e.requires)) or "-"
            hp = ", ".join(f"{k}={v}" for k, v in e.defaults().items()) or "-"
            table.add_row(e.name, e.kind, signals, hp, e.paper, e.summary)
    elif kind == "backbone":
        from livar_bench.models import TINY_BACKBONES, list_backbones

        table = Table("name", "note")
        for name in list_backbones("vit_*patch16_224*"):
            table.add_row(name, "offline, seeded random weights" if name in TINY_BACKBONES else "timm pretrained")
    else:
        raise BenchError(f"cannot list {what!r}; choose datasets, methods or backbones")
    out.print(table)
