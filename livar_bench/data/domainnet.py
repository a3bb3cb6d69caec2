"""DomainNet (Peng et al., ICCV 2019, "Moment Matching for Multi-Source Domain Adaptation"): six domains,
345 classes, the official train/test split files; the field's feature-skew benchmark.

Expected under ``--data-root`` (what the cleaned release's zips and split files unpack to)::

    <root>/domainnet/<domain>/<class>/<domain>_<nnn>_<nnnnnn>.jpg     clipart, infograph, painting,
    <root>/domainnet/<domain>_train.txt, <domain>_test.txt          quickdraw, real, sketch
                                    (lines "clipart/aircraft_carrier/clipart_001_000018.jpg 0")

The split files may also sit in ``<root>/domainnet/splits/``. A domain whose split files are absent is
left out (the bundle's ``domain_names`` say which are there). ``domainnet10`` is the ten-class subset of
FedBN (Li et al., ICLR 2021) and PFLlib: bird, feather, headphones, ice_cream, teapot, tiger, whale,
windmill, wine_glass, zebra, relabelled 0..9 in that order. Each image's domain is its top folder.
Official labels are kept (the label of the class folder in the split files; 0..344 in alphabetical
order in the release); note that the release's painting_train.txt has no t-shirt image.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from livar_bench.data.base import DatasetBundle, ImageSplit, LoadOptions
from livar_bench.data.cache import cache_path, decode_images, load_or_build
from livar_bench.digest import json_digest
from livar_bench.errors import BenchError, DataNotFoundError

DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
FEDBN_CLASSES = ("bird", "feather", "headphones", "ice_cream", "teapot", "tiger", "whale", "windmill",
                 "wine_glass", "zebra")
DOMAINNET_HOW = (
    "Download the six domain zips and their train/test split files (<domain>_train.txt, <domain>_test.txt) "
    "from http://ai.bu.edu/M3SDA/ (the cleaned version) and unpack them in --data-root/domainnet/, giving "
    "domainnet/<domain>/<class>/*.jpg next to the split files."
)

Entry = tuple[str, int, int]  # (path relative to domainnet/, official label, domain id)


def _folder(options: LoadOptions, dataset: str) -> Path:
    if not options.data_root:
        raise DataNotFoundError(f"dataset {dataset!r} needs --data-root pointing at the folder that holds "
                                f"domainnet/. {DOMAINNET_HOW}")
    root = Path(options.data_root).expanduser() / "domainnet"
    if not root.is_dir():
        raise DataNotFoundError(f"{dataset}: expected {root}, which does not exist. {DOMAINNET_HOW}")
    return root


def split_file(root: Path, domain: str, split: str) -> Path | None:
    for where in (root, root / "splits"):
        if (where / f"{domain}_{split}.txt").is_file():
            return where / f"{domain}_{split}.txt"
    return None


def read_split(path: Path, domain_id: int) -> list[Entry]:
    """The (path, label, domain) entries of one official split file."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            rel, label = parts[0], int(parts[1])
        except (IndexError, ValueError):
            raise BenchError(f"domainnet: line {number} of {path} is not '<path> <label>' ({line.strip()!r}); "
                             f"download the split file again. {DOMAINNET_HOW}") from None
        if len(Path(rel).parts) != 3 or label < 0:
            raise BenchError(f"domainnet: line {number} of {path} does not name <domain>/<class>/<file> with a "
                             f"label >= 0 ({line.strip()!r})")
        entries.append((rel, label, domain_id))
    return entries


def class_names_of(entries: list[Entry], dataset: str) -> tuple[str, ...]:
    """Class folder of each official label; labels must be 0..C-1, one folder each."""
    names: dict[int, str] = {}
    for rel, label, _ in entries:
        folder = Path(rel).parts[1]
        if names.setdefault(label, folder) != folder:
            raise BenchError(f"{dataset}: label {label} names two classes ({names[label]}, {folder}) in the split "
                             "files; download them again")
    if sorted(names) != list(range(len(names))):
        raise BenchError(f"{dataset}: the split files' labels are not 0..{len(names) - 1}; download them again")
    return tuple(names[i] for i in range(len(names)))


def load_domainnet(options: LoadOptions, classes: tuple[str, ...] | None = None,
                   dataset: str = "domainnet") -> DatasetBundle:
    """DomainNet with its official splits (``classes``: keep only these class folders, relabelled in order)."""
    root = _folder(options, dataset)
    present = [d for d in DOMAINS if split_file(root, d, "train") and split_file(root, d, "test")]
    if not present:
        raise DataNotFoundError(f"{dataset}: no <domain>_train.txt and <domain>_test.txt in {root} (or "
                                f"{root / 'splits'}). {DOMAINNET_HOW}")
    entries = {s: [e for d in present for e in read_split(split_file(root, d, s), DOMAINS.index(d))]
               for s in ("train", "test")}
    names = class_names_of(entries["train"] + entries["test"], dataset)
    if classes is not None:
        missing = [c for c in classes if c not in names]
        if missing:
            raise BenchError(f"{dataset}: classes {', '.join(missing)} are not in the split files of {root}")
        relabel = {names.index(c): i for i, c in enumerate(classes)}
        entries = {s: [(p, relabel[y], d) for p, y, d in es if y in relabel] for s, es in entries.items()}
        names = classes
    domain_ids = {DOMAINS.index(d): i for i, d in enumerate(present)}  # ids index the present domains
    size = options.storage_size

    def build(items: list[Entry], split: str) -> ImageSplit:
        paths = [root / p for p, _, _ in items]
        absent = next((p for p in paths if not p.is_file()), None)
        if absent is not None:
            raise DataNotFoundError(f"{dataset}: {absent} is listed in the split files but does not exist; unpack "
                                    f"the domain zips again. {DOMAINNET_HOW}")
        return ImageSplit(decode_images(paths, size, f"{dataset} {split}"),
                          torch.tensor([y for _, y, _ in items], dtype=torch.int64))

    out = {}
    for split, items in entries.items():
        key = {"n": len(items), "list": json_digest([[p, y] for p, y, _ in items], 16), "size": size,
               "root": str(root)}
        decoded = load_or_build(cache_path(options.cache_dir, dataset, split, key), lambda i=items, s=split: build(i, s))
        domains = torch.tensor([domain_ids[d] for _, _, d in items], dtype=torch.int64)
        out[split] = dataclasses.replace(decoded, domains=domains)  # from the split files, not the cache
    return DatasetBundle(dataset, out["train"], out["test"], names, domain_names=tuple(present))


def load_domainnet10(options: LoadOptions) -> DatasetBundle:
    """DomainNet's ten-class subset of FedBN, official splits."""
    return load_domainnet(options, FEDBN_CLASSES, dataset="domainnet10")
