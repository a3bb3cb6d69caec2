"""``livar-bench ls``: list datasets, methods, backbones and partitioners.

``--format auto`` (default) draws a table on a terminal wide enough for it and otherwise (piped, or a
narrow terminal) prints ``tsv``: a header and one tab-separated line per row, never cut or wrapped.
``csv`` and ``json`` (a list of objects) are for scripts. For methods, the hyperparameters cell lists
each one as ``key=default in RANGE: help`` (one per line in the table, ``; ``-separated in tsv and csv),
and json gives each as an object: type, default, help, range or choices.
"""

from __future__ import annotations

import csv
import io
import json
import sys

import typer
from rich.table import Table

from livar_bench.cli import app
from livar_bench.errors import BenchError

FORMATS = ("auto", "table", "tsv", "csv", "json")
CELL_LINES = "\n"  # lines inside one cell (a method's hyperparameters); "; " outside the table view


def rows_for(what: str) -> tuple[list[str], list[list[str]]]:
    """(column names, rows of text) for ``datasets``, ``methods`` or ``backbones``."""
    kind = what.lower().rstrip("s")
    if kind == "dataset":
        from livar_bench.data import DATASETS, FOLDER_HOW, HF_HOW

        rows = [[d.name, str(d.num_classes), d.summary, d.how_to_get] for d in DATASETS.values()]
        rows.append(["folder:<path>", "any", "any image folder or .tar/.tar.gz/.zip of one (ImageFolder convention), "
                     "identified by its content", f"give {FOLDER_HOW}"])
        rows.append(["hf:<source>", "any", "an image-classification dataset in Hugging Face datasets format "
                     "(Image + ClassLabel columns, train/test splits)", HF_HOW])
        return ["name", "classes", "description", "how to get it"], rows
    if kind == "method":
        from livar_bench.methods import entries
        from livar_bench.methods.hyperparameters import render

        rows = []
        for e in entries():
            signals = ", ".join(sorted(s.value for s in e.requires)) or "-"
            hp = CELL_LINES.join(f"{h.name}={render(h.default)} {h.domain}: {h.help}" for h in e.hyperparameters())
            rows.append([e.name, e.kind, signals, secure_cell(e), hp or "-", e.paper, e.summary])
        return ["name", "kind", "client signals", "secure aggregation", "hyperparameters", "paper", "summary"], rows
    if kind == "backbone":
        from livar_bench.models.catalogue import families
        from livar_bench.models.sizes import TINY_BACKBONES

        rows = [[name, "-", str(cfg["patch_size"]), "-", str(cfg["img_size"]), "offline, seeded random weights"]
                for name, cfg in TINY_BACKBONES.items()]
        for g in families():
            tags = ", ".join(g["tags"][:3]) + (f" (+{len(g['tags']) - 3})" if len(g["tags"]) > 3 else "")
            rows.append([g["family"], ",".join(g["sizes"]) or "-", str(g["patch"] or "?"), str(g["timm_size"] or "?"),
                         str(g["size"]), tags])
        return ["family (* = size)", "sizes", "patch", "timm px", "used px", "pretrained tags"], rows
    if kind == "partitioner":
        from livar_bench.data.partitioners import PARTITIONERS

        rows = []
        for cls in PARTITIONERS.values():
            settings = "; ".join(f"{k}={_value(f.default)}: {(f.description or '').rstrip('.')}"
                                 for k, f in cls.model_fields.items())
            rows.append([cls.name, settings or "-", cls.summary])
        return ["name", "settings (default: help)", "summary"], rows
    raise BenchError(f"cannot list {what!r}; choose datasets, methods, backbones or partitioners")


def _value(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def secure_cell(entry) -> str:
    """``sum`` (the server needs only the sum of the client updates: secure aggregation, central DP noise) or
    ``individual`` (it needs each client's contribution), with why, for the default settings."""
    kind, reason = entry.default.secure_aggregation()
    return f"{kind}: {reason}"


def method_items() -> list[dict]:
    """``ls methods --format json``: every method with each hyperparameter as an object."""
    from livar_bench.methods import entries

    return [{"name": e.name, "kind": e.kind, "label": e.label,
             "client signals": sorted(s.value for s in e.requires),
             "secure aggregation": dict(zip(("needs", "because"), e.default.secure_aggregation(), strict=True)),
             "paper": e.paper, "summary": e.summary,
             "card": f"baselines/{e.card}/README.md", "hyperparameters": [h.to_json() for h in e.hyperparameters()]}
            for e in entries()]


def render(columns: list[str], rows: list[list[str]], fmt: str) -> str | Table:
    """Text for ``tsv``, ``csv`` and ``json``; a rich ``Table`` for ``table``."""
    if fmt != "table":
        rows = [[cell.replace(CELL_LINES, "; ") for cell in row] for row in rows]
    if fmt == "json":
        return json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    if fmt == "tsv":
        def clean(cell: str) -> str:
            return " ".join(cell.split())  # no tab or newline inside a cell: one row per line

        return "\n".join("\t".join(clean(c) for c in line) for line in [columns, *rows])
    table = Table(*columns)
    for row in rows:
        table.add_row(*row)
    return table


def table_width(columns: list[str], rows: list[list[str]]) -> int:
    """Characters a rich table needs to show every cell on one line: the widest cell of each column,
    plus one space of padding on each side and one border character per column and at the end."""
    widths = [max(len(line) for cell in [name, *(row[i] for row in rows)] for line in cell.split(CELL_LINES))
              for i, name in enumerate(columns)]
    return sum(widths) + 3 * len(columns) + 1


@app.command("ls")
def ls(
    what: str = typer.Argument(..., help="datasets, methods, backbones or partitioners"),
    format: str = typer.Option("auto", "--format", help="auto, table, tsv, csv or json (auto: a table on a "
                               "terminal wide enough for it, else tsv: one complete row per line)."),
    check: str | None = typer.Option(None, help="With backbones: check one name (patch, sizes, hub page, "
                                     "local cache) instead of listing.", show_default="none"),
) -> None:
    """List what can be used. Example: livar-bench ls methods; livar-bench ls partitioners;
    livar-bench ls backbones --check NAME"""
    from rich.console import Console

    if check is not None:
        if what.lower().rstrip("s") != "backbone":
            raise BenchError("--check is for backbones: livar-bench ls backbones --check NAME")
        return _check_backbone(check)

    fmt = format.lower()
    if fmt not in FORMATS:
        raise BenchError(f"unknown --format {format!r}; choose {', '.join(FORMATS)}")
    columns, rows = rows_for(what)
    out = Console(markup=False, highlight=False)
    if fmt == "auto":
        fmt = "table" if sys.stdout.isatty() and table_width(columns, rows) <= out.width else "tsv"
    if fmt == "json" and what.lower().rstrip("s") == "method":
        result: str | Table = json.dumps(method_items(), indent=2)
    else:
        result = render(columns, rows, fmt)
    if isinstance(result, str):
        typer.echo(result)
    else:
        out.print(result)
    if what.lower().rstrip("s") == "backbone" and fmt in ("table", "tsv"):
        from livar_bench.models.sizes import PROTOCOL_IMAGE_SIZE

        typer.echo(f"Any timm ViT of these families works (timm's vision_transformer module). Unless --image-size "
                   f"is given, inputs are {PROTOCOL_IMAGE_SIZE} px (the paper's protocol), not timm's default; a size "
                   "must be a multiple of the patch size. Check a name with `livar-bench ls backbones --check NAME`.",
                   err=True)


def _check_backbone(name: str) -> None:
    from livar_bench.models.catalogue import check_backbone

    info = check_backbone(name)  # BenchError (exit 2) for unknown names and models LoRA cannot go on
    lines = [f"{info['name']}: ok",
             f"  patch {info['patch']}, input {info['default_size']} px unless --image-size is given (a multiple of "
             f"{info['patch']})" + (f"; timm's default is {info['timm_size']} px" if info["timm_size"] else "")]
    if info["hub"]:
        state = "in the local Hugging Face cache" if info["cached"] else "not in the local cache (download, or --weights)"
        lines.append(f"  pretrained weights: https://huggingface.co/{info['hub']} ({state})")
    if info["layerscale"]:
        lines.append("  LayerScale: with --no-pretrained the features hardly depend on the input (chance accuracy)")
    if info["note"]:
        lines.append(f"  {info['note']}")
    typer.echo("\n".join(lines))
