"""What a run id and a partition id are hashes of.

A run id covers every setting that can change a result and nothing that only says where files are or how
fast the run goes (``NON_IDENTITY_FIELDS``). Settings added later are left out at the value that reproduces
what runs did before they existed, so the ids of older runs stay what they were (tests/test_run_id_pins.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from livar_bench.config.spec import RunSpec

HEAD_INIT = "timm"  # models.LoraViT.initial_params draws the head as timm does (part of every run id)

# Fields that do not change what is computed, only where files are or how fast it runs.
NON_IDENTITY_FIELDS = frozenset({"data_root", "device", "eval_batch_size", "cache_dir", "download", "pack"})


def run_id_payload(spec: RunSpec) -> dict[str, Any]:
    """Every setting that can change a result, as hashed into ``RunSpec.run_id``: fields that only say where
    or how fast are left out, as are settings at the value they had before they existed (old ids stay)."""
    payload = {k: v for k, v in spec.model_dump(mode="json").items() if k not in NON_IDENTITY_FIELDS}
    for optional in ("val_fraction", "eval_local", "client_ranks", "secure_aggregation", "stragglers", "dropout",
                     "deadline", "heldout_domains"):
        if not payload[optional]:  # ids of runs made before they existed
            payload.pop(optional)
    # ids of runs made before it existed; with equal ranks both rules give alpha / r
    if payload["rank_scale"] == "alpha_over_rank" or not spec.mixed_ranks:
        payload.pop("rank_scale")
    if payload["local_work"] == "fixed":
        payload.pop("local_work")
    if "stragglers" not in payload:  # straggler_work has no effect without stragglers
        payload.pop("straggler_work")
    if not spec.partition_spec.uses_alpha():  # alpha has no effect on an IID (shards, ...) partition
        payload.pop("alpha")
    digests = spec.method_spec.content_digests
    if digests:  # contents of files the method reads (a LIVAR rule), not just their paths
        payload["method_files"] = digests
    # Every run starts from timm's head initialisation since issue 13 (before: nn.Linear's uniform draw):
    # every number changed, so every id did too; results made before are different experiments.
    payload["head_init"] = HEAD_INIT
    recipes = spec.method_spec.recipe_versions
    if recipes:  # components whose default behaviour changed (CCVR, TIES): new ids for new numbers
        payload["method_recipes"] = recipes
    from livar_bench.models.identity import id_payload

    payload.update(id_payload(spec))  # weights by content; the input size an unset size now means
    payload.update(spec.data_identity)  # folder: and cifar10's image copy by content ({} for the rest)
    return payload


def partition_payload(spec: RunSpec) -> dict[str, Any]:
    """The settings that decide which client holds which sample (and trains on which)."""
    keys = ("dataset", "max_train_samples", "partition", "alpha", "num_clients", "min_client_samples", "seed")
    uses_alpha = spec.partition_spec.uses_alpha()
    payload = {k: getattr(spec, k) for k in keys if not (k == "alpha" and not uses_alpha)}
    payload.update(spec.data_identity)
    if spec.val_fraction:  # the validation carve changes each client's training data
        payload["val_fraction"] = spec.val_fraction
    if spec.heldout_domains:  # the held-out domains leave the training set before it is partitioned
        payload["heldout_domains"] = list(spec.heldout_domains)
    return payload
