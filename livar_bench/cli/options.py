"""Run options, declared once and shared by ``run``, ``sweep``, ``tune`` and ``explain``.

``RUN_OPTIONS`` holds one declaration per run setting (flag, type, help). The ``run_options`` decorator
adds every one of them to a command's signature, except those the command declares itself (``sweep``
takes ``--datasets`` lists instead of ``--dataset``), and hands the command the settings the user gave as
``settings`` (RunSpec field names). A new RunSpec field therefore reaches every command at once, and
tests/e2e/test_cli_options.py checks that each field is reachable from each command.

Every option defaults to None, meaning "not given": a YAML config or the RunSpec default then applies.
The help text shows that default, read from RunSpec itself.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from livar_bench.config import RunSpec
from livar_bench.errors import BenchError


def _default(field: str) -> str:
    value = RunSpec.model_fields[field].default
    if isinstance(value, tuple):
        value = ",".join(value)
    if value is None and field == "image_size":
        return "224, the protocol's; a tiny backbone's own"
    return "none" if value is None else str(value)


def _option(field: str, help: str, *flags: str, kind: Any = None) -> tuple[Any, str]:
    """(annotation, RunSpec field) of one run option; the help ends with the RunSpec default."""
    kind = kind if kind is not None else RunSpec.model_fields[field].annotation
    if kind is bool or kind == bool | None:
        kind = bool | None
    elif not (getattr(kind, "__args__", None) and type(None) in kind.__args__):
        kind = kind | None
    text = f"{help} [default: {_default(field)}]"
    return Annotated[kind, typer.Option(*flags, help=text, show_default=False)], field


# option name -> (annotation, RunSpec field). Order = order in --help.
RUN_OPTIONS: dict[str, tuple[Any, str]] = {
    "dataset": _option("dataset", "Dataset (livar-bench ls datasets)."),
    "partition": _option("partition", "Partition spec: iid, dirichlet[alpha=0.1], shards[per_client=2], classes[k=2], "
                                      "quantity[dist=powerlaw,labels=dirichlet], balanced_dirichlet, domain "
                                      "(livar-bench ls partitioners)."),
    "alpha": _option("alpha", "Dirichlet concentration (> 0; smaller = more label skew) of partitions that draw one."),
    "iid": (Annotated[bool, typer.Option("--iid", help="IID partition instead of Dirichlet (alpha then unused); "
                                                         "short for --partition iid. [default: off, Dirichlet]")],
            "partition"),
    "clients": _option("num_clients", "Number of clients.", "--clients"),
    "participation": _option("participation", "Fraction of clients sampled per round."),
    "min_client_samples": _option("min_client_samples", "Redraw the partition until every client has this many."),
    "val_fraction": _option("val_fraction", "Share of each client's training data held out as a validation "
                                            "split (split=val rows)."),
    "rounds": _option("rounds", "Communication rounds."),
    "epochs": _option("local_epochs", "Local epochs per round.", "--epochs"),
    "batch_size": _option("batch_size", "Local batch size."),
    "local_work": _option("local_work", "Local work per client and round: fixed (--epochs), epochs[min=1,max=5] or "
                                        "steps[min=10,max=50], drawn uniformly per client and round."),
    "stragglers": _option("stragglers", "Fraction of each round's sampled clients that do only --straggler-work of "
                                        "their local steps."),
    "straggler_work": _option("straggler_work", "Share of its local steps a straggler completes."),
    "dropout": _option("dropout", "Probability that a sampled client does not reply in a round."),
    "deadline": _option("deadline", "Round deadline in step-times of a median-speed device (device speeds are "
                                    "log-normal per client); slower clients do not reply."),
    "lr": _option("lr", "Client AdamW learning rate."),
    "weight_decay": _option("weight_decay", "Client AdamW weight decay."),
    "seed": _option("seed", "Seed for partition, init, data order and server."),
    "backbone": _option("backbone", "timm ViT name or livar_tiny_vit (offline)."),
    "weights": _option("weights", "Local backbone weights file (offline use).", kind=Path),
    "pretrained": _option("pretrained", "Load pretrained weights.", "--pretrained/--no-pretrained"),
    "lora_rank": _option("lora_rank", "LoRA rank r."),
    "lora_alpha": _option("lora_alpha", "LoRA alpha (update scaled by alpha/r)."),
    "lora_targets": _option("lora_targets", "Comma-separated LoRA target modules of each block.", kind=str),
    "client_ranks": _option("client_ranks", "LoRA rank per client, cycled over clients, e.g. 4,8,16 (flora and "
                                            "product-space merges only).", kind=str),
    "rank_scale": _option("rank_scale", "With --client-ranks: each client's LoRA scale alpha/r_k (alpha_over_rank) "
                                        "or alpha/max rank for all (constant; FLoRA's authors use alpha = 2 r_k).",
                          kind=str),
    "image_size": _option("image_size", "Input size in pixels, a multiple of the patch size."),
    "data_root": _option("data_root", "Folder holding the real datasets.", kind=Path),
    "cache_dir": _option("cache_dir", "Folder for decoded image caches.", kind=Path),
    "download": _option("download", "Download datasets when possible.", "--download/--no-download"),
    "max_train_samples": _option("max_train_samples", "Seeded training subsample (quick runs)."),
    "max_test_samples": _option("max_test_samples", "Seeded test subsample (quick runs)."),
    "heldout_domains": _option("heldout_domains", "Comma-separated domains left out of training, evaluated on their "
                                                  "own (split test_heldout), e.g. sketch.", kind=str),
    "precision": _option("precision", "auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32.", kind=str),
    "device": _option("device", "auto, cpu, cuda or cuda:N."),
    "eval_batch_size": _option("eval_batch_size", "Evaluation batch size."),
    "eval_local": _option("eval_local", "Also evaluate each client's own model on a test subset with its label "
                                        "distribution (split test_local).", "--eval-local/--no-eval-local"),
    "secure_aggregation": _option("secure_aggregation", "Flower engine: aggregate with SecAgg+ (sum-only methods, "
                                                        "ls methods).", "--secure-aggregation/--no-secure-aggregation"),
    "pack": _option("pack", "Clients trained together in one batched step (0/1 = off; unset = auto: off on CPU, "
                            "up to 10 on CUDA)."),
}
# RunSpec fields with no option of their own: the method (each command has its own way to give it).
NOT_OPTIONS = frozenset({"method"})

Config = Annotated[Path | None, typer.Option(help="YAML file of run settings; options override it. [default: none]")]
Tracker = Annotated[list[str] | None, typer.Option(
    "--tracker", help="Mirror every round into tensorboard, mlflow or wandb (repeatable; offline by default: "
                      "files under OUT; pip install 'livar-bench[trackers]'). A tracker that fails is one "
                      "warning; the results folder stays complete. [default: none]")]


def run_options(fn: Callable[..., Any] | None = None, *, skip: tuple[str, ...] = ()) -> Any:
    """Add every run option the command does not declare itself (or ``skip``); the command receives
    ``settings``, RunSpec field names -> the values the user gave (options left out are absent).

    ``skip`` names options a command replaces by something else (``sweep --datasets`` for ``--dataset``).
    """
    if fn is None:
        return functools.partial(run_options, skip=skip)
    own = inspect.signature(fn, eval_str=True)
    names = set(own.parameters)
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False if name == "iid" else None,
                               annotation=annotation)
             for name, (annotation, _) in RUN_OPTIONS.items() if name not in names and name not in skip]
    kept = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own.parameters.values() if p.name != "settings"]
    added_names = {p.name for p in added}

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in list(kwargs) if name in added_names}
        return fn(settings=run_settings(**given), **kwargs)

    parameters = kept + added
    command.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    del command.__wrapped__  # typer must read the new signature, not the wrapped function's
    return command


def run_settings(iid: bool = False, **options: Any) -> dict[str, Any]:
    """RunSpec fields from option values: renamed, paths as strings, options not given (None) left out."""
    values = {}
    for name, value in options.items():
        if value is None:
            continue
        field = RUN_OPTIONS[name][1] if name in RUN_OPTIONS else name
        if isinstance(value, Path):
            value = str(value)
        if field in ("lora_targets", "heldout_domains") and isinstance(value, str):
            value = tuple(t.strip() for t in value.split(",") if t.strip())
        if field == "client_ranks" and isinstance(value, str):
            try:
                value = tuple(int(t) for t in value.split(",") if t.strip())
            except ValueError:
                raise BenchError(f"--client-ranks {value!r}: expected comma-separated integers, e.g. 4,8,16") from None
        values[field] = value
    if iid:
        if values.get("partition", "iid").strip().lower() != "iid":
            raise BenchError(f"--iid and --partition {values['partition']!r} ask for two partitions; give one "
                             "(--iid is short for --partition iid)")
        values["partition"] = "iid"
    return values


def spec_values(config: Path | None, settings: dict[str, Any]) -> dict[str, Any]:
    """YAML config values overridden by the run settings the user gave."""
    from livar_bench.config import load_yaml

    values: dict[str, Any] = load_yaml(config) if config else {}
    values.update(settings)
    return values
