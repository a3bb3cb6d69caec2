"""``livar-bench run``: one federated experiment."""

from __future__ import annotations

from pathlib import Path

import typer

from livar_bench.cli import app
from livar_bench.cli import options as o
from livar_bench.errors import BenchError


def apply_params(method: str, params: list[str] | None) -> str:
    """Fold ``--param name.key=value`` options into the method spec (validated, canonical)."""
    from livar_bench.methods.spec import MethodSpec

    spec = MethodSpec.parse(method)
    for item in params or ():
        target, sep, value = item.partition("=")
        name, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise BenchError(f"--param {item!r}: expected METHOD.KEY=VALUE, e.g. --param ties.density=0.2")
        spec = spec.with_param(name, key, value)
    return str(spec)


def apply_livar_rule(method: str, path: Path) -> str:
    """``method`` with its livar component's ``rule`` set to ``path`` (``run --livar-rule``).

    Any path works: the spec quotes values that the grammar would otherwise split. The file is read
    and validated here, so a bad rule fails before any model is built.
    """
    from livar_bench.methods.spec import MethodSpec

    spec = MethodSpec.parse(method)
    if "livar" not in spec.names:
        raise BenchError(f"--livar-rule needs a method with a livar part (e.g. --method livar or livar+ccvr), "
                         f"not {method!r}")
    return str(spec.with_param("livar", "rule", str(path)))


@app.command()
def run(
    dataset: o.Dataset = None,
    method: str | None = typer.Option(None, help="Method spec, e.g. livar, livar+ccvr, ties[density=0.3]."),
    param: list[str] | None = typer.Option(None, help="Method hyperparameter METHOD.KEY=VALUE (repeatable)."),
    livar_rule: Path | None = typer.Option(None, help="LIVAR rule JSON (from `livar-bench explain`); sets livar.rule."),
    alpha: o.Alpha = None,
    iid: o.Iid = False,
    clients: o.Clients = None,
    participation: o.Participation = None,
    min_client_samples: o.MinClientSamples = None,
    val_fraction: o.ValFraction = None,
    rounds: o.Rounds = None,
    epochs: o.Epochs = None,
    batch_size: o.BatchSize = None,
    lr: o.Lr = None,
    weight_decay: o.WeightDecay = None,
    seed: o.Seed = None,
    backbone: o.Backbone = None,
    weights: o.Weights = None,
    pretrained: o.Pretrained = None,
    lora_rank: o.LoraRank = None,
    lora_alpha: o.LoraAlpha = None,
    image_size: o.ImageSize = None,
    data_root: o.DataRoot = None,
    download: o.Download = None,
    max_train_samples: o.MaxTrain = None,
    max_test_samples: o.MaxTest = None,
    precision: o.Precision = None,
    device: o.Device = None,
    pack: o.Pack = None,
    config: o.Config = None,
    out: Path = typer.Option(Path("results"), help="Results folder (runs go to OUT/runs/<run_id>)."),
    force: bool = typer.Option(False, help="Rerun even if this run is already done (replaced only on success)."),
) -> None:
    """Run one federated experiment and write its tidy metrics.

    Example: livar-bench run --dataset digits --method livar --alpha 0.5 --clients 4 --rounds 2
    """
    from livar_bench.cli.ui import RunProgress, console
    from livar_bench.config import make_spec
    from livar_bench.federation import run_federation

    values = o.spec_values(
        config, iid=iid, dataset=dataset, alpha=alpha, clients=clients, participation=participation,
        min_client_samples=min_client_samples, val_fraction=val_fraction, pack=pack, rounds=rounds, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, seed=seed, backbone=backbone, weights=weights, pretrained=pretrained,
        lora_rank=lora_rank, lora_alpha=lora_alpha, image_size=image_size, data_root=data_root, download=download,
        max_train_samples=max_train_samples, max_test_samples=max_test_samples, precision=precision, device=device,
    )
    values["method"] = apply_params(method or values.get("method", "fedavg"), param)
    if livar_rule is not None:
        values["method"] = apply_livar_rule(values["method"], livar_rule)
    spec = make_spec(values)
    with RunProgress() as progress:
        outcome = run_federation(spec, out, on_event=progress, force=force)
    if outcome.skipped and outcome.final:
        console.print(f"run {outcome.run_id} already done ({outcome.run_dir}); use --force to rerun", highlight=False)
    acc = outcome.final.get("acc")
    if acc is not None:
        typer.echo(f"{spec.method} on {spec.dataset}: final test acc {acc:.4f} (run {outcome.run_id}, {outcome.run_dir})")
