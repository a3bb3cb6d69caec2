"""Checks of a RunSpec that read other parts of the package (methods, data, models): each raises one
``BenchError`` saying what to change. ``RunSpec``'s validators call them once the fields are valid."""

from __future__ import annotations

from typing import TYPE_CHECKING

from livar_bench.errors import BenchError

if TYPE_CHECKING:
    from livar_bench.config.spec import RunSpec


def check_ranks(spec: RunSpec) -> None:
    """Different client ranks only with a method that can aggregate them."""
    if not spec.mixed_ranks:
        return
    from livar_bench.methods import entries

    if not spec.method_spec.components[0].accepts_mixed_ranks():
        able = [e.name for e in entries() if e.kind == "method" and e.cls().accepts_mixed_ranks()]
        able += ["fedavg[space=product]", "ties[space=product]", "task_arithmetic[space=product]", "dare[space=product]",
                 "dare_ties[space=product]"]
        raise BenchError(f"--client-ranks {','.join(map(str, spec.client_ranks))} gives clients different LoRA "
                         f"ranks, which {spec.method} cannot aggregate (it adds factors of different clients "
                         f"entry by entry); methods that can: {', '.join(dict.fromkeys(able))}")


def check_secure(spec: RunSpec) -> None:
    """Secure aggregation only for a method whose server needs only the sum of the updates."""
    if not spec.secure_aggregation:
        return
    method = spec.method_spec.build()
    kind, reason = method.secure_aggregation
    if kind != "sum":
        raise BenchError(f"--secure-aggregation needs a method whose server uses only the sum of the client "
                         f"updates; {spec.method} needs each client's contribution ({reason})")
    if spec.eval_local:
        raise BenchError("--eval-local needs each client's own model, which secure aggregation hides; drop one")
    if spec.system.active:
        raise BenchError("--secure-aggregation runs every sampled client's full work through SecAgg+; system "
                         "heterogeneity (--local-work, --stragglers, --dropout, --deadline) is not simulated "
                         "with it: drop one")
    for stage in method.stages:
        if getattr(stage, "adaptive", False):
            raise BenchError("dp[adaptive=true] needs each client's update norm, which secure aggregation hides; "
                             "use a fixed clip with --secure-aggregation")


def check_privacy(spec: RunSpec) -> None:
    """A dp stage's accounting for this run (a target epsilon calibrated, once per setting): an
    unreachable target fails here, before anything is written."""
    if "dp" not in spec.method_spec.names:
        return
    from livar_bench.methods.dp import privacy_report

    privacy_report(spec.method_spec.build(), spec.num_clients, spec.participation, spec.rounds)


def check_partition_fits_dataset(spec: RunSpec) -> None:
    """A partition that needs domains, or held-out domains, only on a dataset that has them."""
    from livar_bench.data import DATASETS, has_domains
    from livar_bench.data.partitioners.base import no_domains

    known = tuple(d.name for d in DATASETS.values() if d.domains)
    if spec.partition_spec.needs_domains and has_domains(spec.dataset) is False:
        raise BenchError(no_domains(spec.partition_spec.name, spec.dataset, known))
    if spec.heldout_domains and has_domains(spec.dataset) is False:
        raise BenchError(f"--heldout-domains needs a dataset with domains ({', '.join(known)}, or an hf: dataset "
                         f"with a 'domain' column), but {spec.dataset} has none")


def check_lora_layers(spec: RunSpec) -> None:
    """Targets other than the default name linear layers of the backbone's blocks (checked on a model
    built on the meta device, before any data is read; the default is checked when the model is built)."""
    if spec.lora_targets != type(spec).model_fields["lora_targets"].default:
        from livar_bench.models.targets import check_targets

        problem = check_targets(spec.backbone, spec.lora_targets)
        if problem:
            raise BenchError(problem)
