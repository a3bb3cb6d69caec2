"""Dataset registry: ``load_dataset(name, options)``, ``DATASETS`` for listing, and what a run id and a
run's spec.json record of the data (``identity``, ``record``)."""

from __future__ import annotations

import dataclasses
import difflib

import numpy as np
import torch

from livar_bench.data import cifar10, domainnet, offline, real
from livar_bench.data.base import DatasetBundle, DatasetDef, ImageSplit, LoadOptions
from livar_bench.data.folder import FOLDER_HOW, folder_identity, folder_path, is_folder, load_folder
from livar_bench.data.hf import HF_HOW, is_hf, load_hf
from livar_bench.errors import BenchError

DATASETS: dict[str, DatasetDef] = {
    d.name: d
    for d in [
        DatasetDef("digits", offline.load_digits_bundle, 10, "scikit-learn's bundled 8x8 digits, 1,438/359 split",
                   "bundled with scikit-learn; nothing to download", offline=True),
        DatasetDef("synthetic", offline.load_synthetic_bundle, 10, "seeded class-conditional 16x16 images (tests)",
                   "generated; nothing to download", offline=True),
        DatasetDef("cifar10", cifar10.load_cifar10, 10, "CIFAR-10, 50,000/10,000: the original pickles or the "
                   "image-folder (JPEG) copy, in-distribution", cifar10.CIFAR10_HOW, aliases=("cifar-10",)),
        DatasetDef("cifar100", real.load_cifar100, 100, "CIFAR-100, 50,000/10,000, in-distribution",
                   real.CIFAR100_HOW, aliases=("cifar-100",)),
        DatasetDef("imagenet-r", real.load_imagenet_r, 200, "ImageNet-R, 200 classes, seeded 80/20 split; "
                   "domains: the 15 rendition types", real.IMAGENET_R_HOW, aliases=("imagenet_r", "imr"), domains=True),
        DatasetDef("domainnet", domainnet.load_domainnet, 345, "DomainNet, 6 domains, 345 classes, official split "
                   "(feature skew)", domainnet.DOMAINNET_HOW, domains=True),
        DatasetDef("domainnet10", domainnet.load_domainnet10, 10, "DomainNet's ten classes of FedBN, 6 domains, "
                   "official split", domainnet.DOMAINNET_HOW, aliases=("domainnet-10",), domains=True),
        DatasetDef("eurosat", real.load_eurosat, 10, "EuroSAT RGB, CoOp split 13,500/8,100, out-of-distribution",
                   real.EUROSAT_HOW),
        DatasetDef("cub200", real.load_cub200, 200, "CUB-200-2011, official split 5,994/5,794, out-of-distribution",
                   real.CUB_HOW, aliases=("cub", "cub-200", "cub_200")),
    ]
}
_ALIASES = {alias: d.name for d in DATASETS.values() for alias in (d.name, *d.aliases)}


def resolve_name(name: str) -> str:
    """Canonical dataset name, or a clear error listing the known ones."""
    if is_hf(name.strip()):
        return name.strip()  # a path or Hub id: case matters
    if is_folder(name.strip()):
        folder_path(name.strip())  # refuses an empty or missing path before anything is built
        return name.strip()
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    close = difflib.get_close_matches(key, list(_ALIASES), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise BenchError(f"unknown dataset {name!r}.{hint} Known: {', '.join(DATASETS)}, folder:<image folder or archive>, "
                     f"or hf:<folder or Hub id> (livar-bench ls datasets)")


def has_domains(name: str) -> bool | None:
    """Whether dataset ``name``'s splits carry domain ids (None for an hf: dataset: known once loaded;
    False for a folder: dataset, whose folders are classes)."""
    name = resolve_name(name)
    if is_folder(name):
        return False
    return None if is_hf(name) else DATASETS[name].domains


def subsample(split: ImageSplit, limit: int | None, seed: int) -> ImageSplit:
    """A seeded random subset of at most ``limit`` samples (kept in original order)."""
    if limit is None or limit >= len(split):
        return split
    index = np.sort(np.random.default_rng(seed).choice(len(split), size=limit, replace=False))
    return split.subset(torch.from_numpy(index).to(split.labels.device))


def load_dataset(
    name: str, options: LoadOptions | None = None, max_train: int | None = None, max_test: int | None = None
) -> DatasetBundle:
    """Load a registered dataset, optionally subsampled (seeded, identical for every run)."""
    name = resolve_name(name)
    options = options or LoadOptions()
    if is_hf(name):
        bundle = load_hf(name, options)
    elif is_folder(name):
        bundle = load_folder(name, options)
    else:
        bundle = DATASETS[name].loader(options)
    if max_train is None and max_test is None:
        return bundle
    return dataclasses.replace(bundle, train=subsample(bundle.train, max_train, 1),
                               test=subsample(bundle.test, max_test, 2))


def identity(name: str, options: LoadOptions) -> dict[str, str]:
    """Changes to a run id's (and partition id's) payload that say which files a dataset was read from:
    ``{}`` for the datasets that existed before (their ids stay), the content digest and split rule for
    ``folder:`` (instead of its path) and for cifar10's image-folder copy."""
    if is_folder(name):
        return folder_identity(name, options.cache_dir)
    if name == "cifar10":
        return cifar10.identity(options)
    return {}


def record(name: str, options: LoadOptions) -> dict[str, object]:
    """What a run's spec.json records of its data beyond the settings: the files read and their counts."""
    from livar_bench.data.folder_index import folder_index

    if is_folder(name):
        path = folder_path(name)
        return {"dataset_source": str(path.resolve()), **folder_index(path, name, options.cache_dir).record()}
    if name == "cifar10":
        return cifar10.record(options)
    return {}


__all__ = ["DATASETS", "FOLDER_HOW", "HF_HOW", "DatasetBundle", "DatasetDef", "ImageSplit", "LoadOptions", "identity", "load_dataset", "record", "resolve_name"]
