"""``livar-bench run``: one federated experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from livar_bench.cli import app
from livar_bench.errors import BenchError


def apply_params(method: str, params: list[str] | None) -> str:
    """Fold ``--param name.key=value`` options into the method spec string."""
    if not params:
        return method
    from livar_bench.methods.registry import split_spec

    parts = split_spec(method)
    names = [name for name, _ in parts]
    for item in params:
        target, sep, value = item.partition("=")
        name, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise BenchError(f"--param {item!r}: expected METHOD.KEY=VALUE, e.g. --param ties.density=0.2")
        if name not in names:
            if name == "fedavg" or names[0] in ("fedavg",):
                pass
            raise BenchError(f"--param {item!r}: {name!r} is not part of method {method!r}")
        parts[names.index(name)][1][key] = value
    return "+".join(f"{n}[{','.join(f'{k}={v}' for k, v in a.items())}]" if a else n for n, a in parts)


def spec_values(config: Path | None, **options: Any) -> dict[str, Any]:
    """YAML config values overridden by the options the user gave (None = not given)."""
    from livar_bench.config import load_yaml

    values: dict[str, Any] = load_yaml(config) if config else {}
    values.update({k: v for k, v in options.items() if v is not None})
    return values


@app.command()
def run(
    dataset: str | None = typer.Option(None, help="Dataset (livar-bench ls datasets). Default: digits."),
    method: str | None = typer.Option(None, help="Method spec, e.g. livar, livar+ccvr, ties[density=0.3]."),
    param: list[str] | None = typer.Option(None, help="Method hyperparameter METHOD.KEY=VALUE (repeatable)."),
    livar_rule: Path | None = typer.Option(None, help="LIVAR rule JSON (from `livar-bench explain`); sets livar.rule."),
    alpha: float | None = typer.Option(None, help="Dirichlet concentration (> 0)."),
    iid: bool = typer.Option(False, "--iid", help="IID partition instead of Dirichlet."),
    clients: int | None = typer.Option(None, help="Number of clients."),
    participation: float | None = typer.Option(None, help="Fraction of clients per round."),
    min_client_samples: int | None = typer.Option(
        None, help="Redraw the partition until every client has this many samples (default 6)."),
    rounds: int | None = typer.Option(None, help="Communication rounds."),
    epochs: int | None = typer.Option(None, help="Local epochs per round."),
    batch_size: int | None = typer.Option(None, help="Local batch size."),
    lr: float | None = typer.Option(None, help="AdamW learning rate."),
    weight_decay: float | None = typer.Option(None, help="AdamW weight decay."),
    seed: int | None = typer.Option(None, help="Seed for partition, init, data order and server."),
    backbone: str | None = typer.Option(None, help="timm ViT name or livar_tiny_vit (offline)."),
    weights: Path | None = typer.Option(None, help="Local backbone weights file (offline use)."),
    pretrained: bool | None = typer.Option(None, "--pretrained/--no-pretrained", help="Load pretrained weights."),
    lora_rank: int | None = typer.Option(None, help="LoRA rank r."),
    lora_alpha: float | None = typer.Option(None, help="LoRA alpha (update scaled by alpha/r)."),
    image_size: int | None = typer.Option(None, help="Input size (default: the backbone's)."),
    data_root: Path | None = typer.Option(None, help="Folder holding the real datasets."),
    download: bool | None = typer.Option(None, "--download/--no-download", help="Download when possible."),
    max_train_samples: int | None = typer.Option(None, help="Seeded training subsample (quick runs)."),
    max_test_samples: int | None = typer.Option(None, help="Seeded test subsample (quick runs)."),
    precision: str | None = typer.Option(None, help="auto (bf16 on CUDA), bf16 or fp32."),
    device: str | None = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
    config: Path | None = typer.Option(None, help="YAML file of run settings; options override it."),
    out: Path = typer.Option(Path("results"), help="Results folder (runs go to OUT/runs/<run_id>)."),
    force: bool = typer.Option(False, help="Rerun even if this run is already done."),
) -> None:
    """Run one federated experiment and write its tidy metrics.

    Example: livar-bench run --dataset digits --method livar --alpha 0.5 --clients 4 --rounds 2
    """
    from livar_bench.cli.ui import RunProgress, console
    from livar_bench.config import make_spec
    from livar_bench.federation import run_federation

    values = spec_values(
        config, dataset=dataset, alpha=alpha, num_clients=clients, participation=participation,
        min_client_samples=min_client_samples, rounds=rounds,
        local_epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, backbone=backbone,
        weights=str(weights) if weights else None, pretrained=pretrained, lora_rank=lora_rank, lora_alpha=lora_alpha,
        image_size=image_size, data_root=str(data_root) if data_root else None, download=download,
        max_train_samples=max_train_samples, max_test_samples=max_test_samples, precision=precision, device=device,
    )
    if iid:
        values["partition"] = "iid"
    values["method"] = apply_params(method or values.get("method", "fedavg"), param)
    if livar_rule is not None:
        from livar_bench.cli.explain import apply_livar_rule

        values["method"] = apply_livar_rule(values["method"], livar_rule)
    spec = make_spec(values)
    with RunProgress() as progress:
        outcome = run_federation(spec, out, on_event=progress, force=force)
    if outcome.skipped and outcome.final:
        console.print(f"run {outcome.run_id} already done ({outcome.run_dir}); use --force to rerun", highlight=False)
    acc = outcome.final.get("acc")
    if acc is not None:
        typer.echo(f"{spec.method} on {spec.dataset}: final test acc {acc:.4f} (run {outcome.run_id}, {outcome.run_dir})")
