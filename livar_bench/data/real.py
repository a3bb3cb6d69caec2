"""Loaders for the paper's datasets, read from ``--data-root``.

Expected layouts (the names the public archives unpack to):

    <root>/cifar-100-python/{train,test,meta}                         CIFAR-100, python pickle format
    <root>/eurosat/2750/<Class>/<Class>_<n>.jpg                        EuroSAT RGB
    <root>/eurosat/split_zhou_EuroSAT.json                             CoOp split (train/val/test)
    <root>/CUB_200_2011/{images.txt,image_class_labels.txt,train_test_split.txt,classes.txt,images/}
    <root>/imagenet-r/<wnid>/<rendition>_<n>.jpg                       ImageNet-R, 200 classes

Variable-size images are decoded and resized once to ``storage_size`` (bicubic, as the reference code
does) and cached; CIFAR-100 and EuroSAT keep their native 32x32 and 64x64 pixels and are resized on
the device.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import torch

from livar_bench.data.base import DatasetBundle, ImageSplit, LoadOptions
from livar_bench.data.cache import cache_path, decode_images, load_or_build
from livar_bench.digest import json_digest
from livar_bench.errors import BenchError, DataNotFoundError

IMAGENET_R_SPLIT_SEED = 0  # fixed: every run and method sees the same 80/20 split
IMAGENET_R_TEST_FRACTION = 0.2


def data_root(options: LoadOptions, dataset: str, how: str, create: bool = False) -> Path:
    """The data root, or a ``DataNotFoundError`` that says how to obtain ``dataset``.

    With ``create`` (a dataset that --download can fetch) a missing root folder is made instead.
    """
    if not options.data_root:
        raise DataNotFoundError(f"dataset {dataset!r} needs --data-root pointing at the folder that holds its files. {how}")
    root = Path(options.data_root).expanduser()
    if create and not root.exists():
        root.mkdir(parents=True, exist_ok=True)
    if not root.is_dir():
        raise DataNotFoundError(f"{dataset}: --data-root {root} is not a folder. {how}")
    return root


def _list_digest(items: list) -> str:
    """Hash of a file list, part of a cache key so that a changed list never reuses stale tensors."""
    return json_digest(items, 16)


def missing_file(dataset: str, path: Path, how: str) -> DataNotFoundError:
    return DataNotFoundError(f"{dataset}: expected {path}, which does not exist. {how}")


# --- CIFAR-100 -------------------------------------------------------------------------------------

CIFAR100_HOW = (
    "Download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and unpack it in --data-root "
    "(giving cifar-100-python/), or rerun with --download on a machine with internet access."
)


def read_cifar_pickle(path: Path, dataset: str = "cifar100", how: str = CIFAR100_HOW) -> dict:
    """One file of the CIFAR python format (a pickled dict), or a BenchError naming it."""
    try:
        with path.open("rb") as fh:
            data = pickle.load(fh, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as err:
        raise BenchError(f"{dataset}: {path} is not a readable CIFAR pickle ({type(err).__name__}); "
                         f"download and unpack it again. {how}") from None
    if not isinstance(data, dict):
        raise BenchError(f"{dataset}: {path} is not in the CIFAR python format; download and unpack it again")
    return data


def load_cifar100(options: LoadOptions) -> DatasetBundle:
    """CIFAR-100 (50,000 train / 10,000 test, 32x32) from the official python pickle files."""
    root = data_root(options, "cifar100", CIFAR100_HOW, create=options.download)
    folder = root / "cifar-100-python"
    if not folder.is_dir() and options.download:
        from torchvision.datasets import CIFAR100

        try:
            CIFAR100(str(root), train=True, download=True)
        except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad checksum a RuntimeError
            raise DataNotFoundError(f"cifar100: download failed ({type(err).__name__}: {err}). {CIFAR100_HOW}") from None
    for name in ("train", "test", "meta"):
        if not (folder / name).is_file():
            raise missing_file("cifar100", folder / name, CIFAR100_HOW)

    def split(name: str) -> ImageSplit:
        raw = read_cifar_pickle(folder / name)
        try:
            images = np.asarray(raw["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(raw["fine_labels"], dtype=np.int64)
        except (KeyError, ValueError, TypeError) as err:
            raise BenchError(f"cifar100: {folder / name} is not in the CIFAR-100 python format ({err})") from None
        if len(labels) != len(images) or (len(labels) and (labels.min() < 0 or labels.max() >= 100)):
            raise BenchError(f"cifar100: {folder / name} has {len(images)} images but {len(labels)} labels, or labels "
                             "outside 0..99; download and unpack it again")
        return ImageSplit(torch.from_numpy(images.copy()), torch.from_numpy(labels))

    meta = read_cifar_pickle(folder / "meta")
    names = tuple(meta.get("fine_label_names", [str(i) for i in range(100)]))
    return DatasetBundle("cifar100", split("train"), split("test"), names)


# --- EuroSAT ---------------------------------------------------------------------------------------

EUROSAT_HOW = (
    "Download EuroSAT RGB (https://madm.dfki.de/files/sentinel/EuroSAT.zip) and unpack it as "
    "<root>/eurosat/2750/<Class>/*.jpg, and put the CoOp split file split_zhou_EuroSAT.json "
    "(https://drive.google.com/file/d/1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o) in <root>/eurosat/."
)


def load_eurosat(options: LoadOptions) -> DatasetBundle:
    """EuroSAT RGB (10 classes, 64x64) with the CoOp split: train 13,500 / test 8,100 (val unused)."""
    root = data_root(options, "eurosat", EUROSAT_HOW) / "eurosat"
    images_dir = root / "2750"
    split_file = root / "split_zhou_EuroSAT.json"
    if not images_dir.is_dir():
        raise missing_file("eurosat", images_dir, EUROSAT_HOW)
    if not split_file.is_file():
        raise missing_file("eurosat", split_file, EUROSAT_HOW)
    try:
        split = json.loads(split_file.read_text())
        entries = {name: [(str(p), int(label), str(cls)) for p, label, cls in split[name]] for name in ("train", "test")}
    except (KeyError, ValueError, TypeError) as err:
        raise BenchError(f"eurosat: {split_file} is not a CoOp split file ({err})") from None
    classes: dict[int, str] = {}
    for name in ("train", "test"):
        for _, label, cls in entries[name]:
            classes[label] = cls
    class_names = tuple(classes[i] for i in range(len(classes)))

    def build(name: str) -> ImageSplit:
        paths = [images_dir / p for p, _, _ in entries[name]]
        labels = torch.tensor([label for _, label, _ in entries[name]], dtype=torch.int64)
        return ImageSplit(decode_images(paths, 64, f"eurosat {name}"), labels)

    out = {}
    for name in ("train", "test"):
        key = {"files": len(entries[name]), "list": _list_digest(entries[name]), "size": 64, "root": str(images_dir)}
        out[name] = load_or_build(cache_path(options.cache_dir, "eurosat", name, key), lambda n=name: build(n))
    return DatasetBundle("eurosat", out["train"], out["test"], class_names)


# --- CUB-200-2011 ----------------------------------------------------------------------------------

CUB_HOW = (
    "Download CUB_200_2011.tgz (https://data.caltech.edu/records/65de6-vp158) and unpack it in "
    "--data-root, giving CUB_200_2011/ with images.txt, image_class_labels.txt, train_test_split.txt."
)


def _read_table(path: Path) -> dict[int, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            key, _, value = line.strip().partition(" ")
            out[int(key)] = value.strip()
    return out


def load_cub200(options: LoadOptions) -> DatasetBundle:
    """CUB-200-2011 with the official train/test split (5,994 / 5,794)."""
    root = data_root(options, "cub200", CUB_HOW) / "CUB_200_2011"
    needed = ["images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"]
    for name in needed:
        if not (root / name).is_file():
            raise missing_file("cub200", root / name, CUB_HOW)
    try:
        images = _read_table(root / "images.txt")
        labels = {k: int(v) - 1 for k, v in _read_table(root / "image_class_labels.txt").items()}
        is_train = {k: v == "1" for k, v in _read_table(root / "train_test_split.txt").items()}
        classes = _read_table(root / "classes.txt")
        missing = [k for k in images if k not in labels or k not in is_train]
    except ValueError as err:
        raise BenchError(f"cub200: a metadata file in {root} is malformed ({err}); re-extract the archive") from None
    if missing:
        raise BenchError(f"cub200: image ids {missing[:3]} lack a label or split entry in {root}; re-extract the archive")
    class_names = tuple(classes[i] for i in sorted(classes))
    size = options.storage_size

    def build(train: bool) -> ImageSplit:
        ids = sorted(k for k in images if is_train[k] == train)
        paths = [root / "images" / images[k] for k in ids]
        return ImageSplit(decode_images(paths, size, f"cub200 {'train' if train else 'test'}"),
                          torch.tensor([labels[k] for k in ids], dtype=torch.int64))

    out = {}
    for name, flag in (("train", True), ("test", False)):
        ids = sorted(k for k in images if is_train.get(k) == flag)
        key = {"n": len(ids), "list": _list_digest([[images[k], labels[k]] for k in ids]), "size": size,
               "root": str(root)}
        out[name] = load_or_build(cache_path(options.cache_dir, "cub200", name, key), lambda f=flag: build(f))
    return DatasetBundle("cub200", out["train"], out["test"], class_names)


# --- ImageNet-R ------------------------------------------------------------------------------------

IMAGENET_R_HOW = (
    "Download https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar and unpack it in --data-root, "
    "giving imagenet-r/<wnid>/*.jpg (200 class folders)."
)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# The renditions the release's file names start with (<rendition>_<n>.jpg, e.g. n01443537/art_0.jpg,
# cartoon_12.jpg, misc_13.jpg): the search query each image was collected with. Any other prefix found
# becomes a domain of its own.
IMAGENET_R_RENDITIONS = ("art", "cartoon", "deviantart", "embroidery", "graffiti", "graphic", "misc", "origami",
                         "painting", "sculpture", "sketch", "sticker", "tattoo", "toy", "videogame")


def rendition(file_name: str) -> str:
    """An ImageNet-R file's rendition type: its stem without the trailing ``_<n>`` (``art_0.jpg`` -> art)."""
    stem = Path(file_name).stem
    head, sep, tail = stem.rpartition("_")
    return head if sep and head and tail.isdigit() else stem


def rendition_domains(names: list[str]) -> tuple[tuple[str, ...], list[int]]:
    """(domain names, sorted; domain id of each file) of ImageNet-R file names."""
    kinds = [rendition(n) for n in names]
    domain_names = tuple(sorted(set(kinds)))
    index = {d: i for i, d in enumerate(domain_names)}
    return domain_names, [index[k] for k in kinds]


def imagenet_r_split(files: list[tuple[str, int]], seed: int = IMAGENET_R_SPLIT_SEED) -> tuple[list[int], list[int]]:
    """Seeded 80/20 split of the file list (sorted by path first, so the split is filesystem-independent)."""
    order = np.random.default_rng(seed).permutation(len(files))
    n_test = int(round(len(files) * IMAGENET_R_TEST_FRACTION))
    return sorted(order[n_test:].tolist()), sorted(order[:n_test].tolist())


def load_imagenet_r(options: LoadOptions) -> DatasetBundle:
    """ImageNet-R (200 classes, ~30k images) with a seeded 80/20 train/test split; each image's domain is
    its rendition type, read from its file name (``rendition``)."""
    root = data_root(options, "imagenet-r", IMAGENET_R_HOW) / "imagenet-r"
    if not root.is_dir():
        raise missing_file("imagenet-r", root, IMAGENET_R_HOW)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not class_dirs:
        raise missing_file("imagenet-r", root / "<wnid>", IMAGENET_R_HOW)
    files = [
        (str(path.relative_to(root)), label)
        for label, folder in enumerate(class_dirs)
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    train_idx, test_idx = imagenet_r_split(files)
    size = options.storage_size

    def build(index: list[int], name: str) -> ImageSplit:
        paths = [root / files[i][0] for i in index]
        labels = torch.tensor([files[i][1] for i in index], dtype=torch.int64)
        return ImageSplit(decode_images(paths, size, f"imagenet-r {name}"), labels)

    domain_names, domain_of = rendition_domains([f for f, _ in files])
    out = {}
    for name, index in (("train", train_idx), ("test", test_idx)):
        key = {"n": len(index), "list": _list_digest([files[i] for i in index]), "size": size, "root": str(root),
               "seed": IMAGENET_R_SPLIT_SEED}
        split = load_or_build(cache_path(options.cache_dir, "imagenet-r", name, key), lambda i=index, n=name: build(i, n))
        # domains come from the file list, not the cache: caches decoded before domains existed stay valid
        out[name] = dataclasses.replace(split, domains=torch.tensor([domain_of[i] for i in index], dtype=torch.int64))
    return DatasetBundle("imagenet-r", out["train"], out["test"], tuple(p.name for p in class_dirs),
                         domain_names=domain_names)
