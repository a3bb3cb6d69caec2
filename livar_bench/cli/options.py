"""Command-line options shared by ``run``, ``sweep``, ``tune`` and ``explain``.

Each option is defined once here (type, flag and help text) and used as an annotation, so the commands
stay consistent. Every option defaults to None, meaning "not given": a YAML config or the RunSpec
default then applies. ``run_settings`` maps the option names to RunSpec fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

Dataset = Annotated[str | None, typer.Option(help="Dataset (livar-bench ls datasets). Default: digits.")]
Alpha = Annotated[float | None, typer.Option(help="Dirichlet concentration (> 0).")]
Iid = Annotated[bool, typer.Option("--iid", help="IID partition instead of Dirichlet (alpha then unused).")]
Clients = Annotated[int | None, typer.Option(help="Number of clients.")]
Participation = Annotated[float | None, typer.Option(help="Fraction of clients per round.")]
MinClientSamples = Annotated[int | None, typer.Option(
    help="Redraw the partition until every client has this many samples (default 6).")]
Rounds = Annotated[int | None, typer.Option(help="Communication rounds.")]
Epochs = Annotated[int | None, typer.Option(help="Local epochs per round.")]
BatchSize = Annotated[int | None, typer.Option(help="Local batch size.")]
Lr = Annotated[float | None, typer.Option(help="AdamW learning rate.")]
WeightDecay = Annotated[float | None, typer.Option(help="AdamW weight decay.")]
Seed = Annotated[int | None, typer.Option(help="Seed for partition, init, data order and server.")]
Backbone = Annotated[str | None, typer.Option(help="timm ViT name or livar_tiny_vit (offline).")]
Weights = Annotated[Path | None, typer.Option(help="Local backbone weights file (offline use).")]
Pretrained = Annotated[bool | None, typer.Option("--pretrained/--no-pretrained", help="Load pretrained weights.")]
LoraRank = Annotated[int | None, typer.Option(help="LoRA rank r.")]
LoraAlpha = Annotated[float | None, typer.Option(help="LoRA alpha (update scaled by alpha/r).")]
ImageSize = Annotated[int | None, typer.Option(help="Input size (default: the backbone's).")]
DataRoot = Annotated[Path | None, typer.Option(help="Folder holding the real datasets.")]
Download = Annotated[bool | None, typer.Option("--download/--no-download", help="Download when possible.")]
MaxTrain = Annotated[int | None, typer.Option(help="Seeded training subsample (quick runs).")]
MaxTest = Annotated[int | None, typer.Option(help="Seeded test subsample (quick runs).")]
Precision = Annotated[str | None, typer.Option(help="auto (bf16 on CUDA), bf16 or fp32.")]
Device = Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")]
ValFraction = Annotated[float | None, typer.Option(
    help="Share of each client's training data held out as a validation split (split=val rows; default 0).")]
Pack = Annotated[int | None, typer.Option(
    help="Clients trained together in one batched step (0/1 = off; default: auto = off on CPU, up to 10 on CUDA).")]
Config = Annotated[Path | None, typer.Option(help="YAML file of run settings; options override it.")]

# CLI option name -> RunSpec field, where they differ.
_RENAMED = {"clients": "num_clients", "epochs": "local_epochs"}


def run_settings(iid: bool = False, **options: Any) -> dict[str, Any]:
    """RunSpec fields from CLI options: renamed, paths as strings, options not given (None) left out."""
    values = {_RENAMED.get(k, k): (str(v) if isinstance(v, Path) else v) for k, v in options.items() if v is not None}
    if iid:
        values["partition"] = "iid"
    return values


def spec_values(config: Path | None, **options: Any) -> dict[str, Any]:
    """YAML config values overridden by the options the user gave."""
    from livar_bench.config import load_yaml

    values: dict[str, Any] = load_yaml(config) if config else {}
    values.update(run_settings(**options))
    return values
