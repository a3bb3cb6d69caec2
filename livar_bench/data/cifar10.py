"""CIFAR-10 (10 classes, 50,000 train / 10,000 test, 32x32), from either of two layouts under --data-root:

    <root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}   torchvision's (the original pickles;
                                                                            --download fetches them)
    <root>/cifar10_jpg.tar.gz  or  <root>/cifar10_jpg/                      the image-folder layout
        (train/<class>/*.jpg, test/<class>/*.jpg), read straight from the archive or from the extracted
        folder; also looked for under <root>/cifar10/

The pickles are used when present (or when --download fetches them); otherwise the image folder, read by
the ``folder:`` loader (so ``--dataset folder:<that folder>`` gives the same tensors), its class folders
checked against torchvision's class names. Labels are torchvision's indices either way. The JPEG copy is
lossy against the pickles, so its run ids carry its content digest and never meet the pickles' ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from livar_bench.data.base import DatasetBundle, ImageSplit, LoadOptions
from livar_bench.data.real import data_root, missing_file, read_cifar_pickle
from livar_bench.errors import BenchError, DataNotFoundError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")  # torchvision's
PICKLES = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
IMAGE_FOLDERS = ("cifar10_jpg", "cifar10_jpg.tar.gz", "cifar10/cifar10_jpg", "cifar10/cifar10_jpg.tar.gz")
CIFAR10_HOW = (
    "Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and unpack it in --data-root (giving "
    "cifar-10-batches-py/), or rerun with --download on a machine with internet access; or put the image-folder "
    "copy cifar10_jpg.tar.gz (train/<class>/*.jpg, test/<class>/*.jpg) or its extracted folder cifar10_jpg/ there."
)


def source(options: LoadOptions) -> tuple[str, Path] | None:
    """("pickles", folder) or ("images", folder or archive) that ``--dataset cifar10`` reads, or None when
    neither is there (with --download: the pickles, fetched on first use)."""
    if not options.data_root:
        return None
    root = Path(options.data_root).expanduser()
    if (root / PICKLES).is_dir() or options.download:
        return "pickles", root / PICKLES
    for rel in IMAGE_FOLDERS:
        if (root / rel).exists():
            return "images", root / rel
    return None


def _check_classes(classes: tuple[str, ...], where: Path) -> None:
    if classes != CLASSES:
        raise BenchError(f"cifar10: the class folders of {where} are {', '.join(classes)}, not CIFAR-10's "
                         f"{', '.join(CLASSES)}; use --dataset folder:{where} for another image folder")


def identity(options: LoadOptions) -> dict[str, str]:
    """The run-id payload of cifar10: nothing for the pickles (the original files), the content digest and
    split of the image-folder copy."""
    from livar_bench.data.folder_index import folder_index

    found = source(options)
    if found is None or found[0] == "pickles":
        return {}
    index = folder_index(found[1], "cifar10", options.cache_dir)
    _check_classes(index.classes, found[1])
    return index.identity()


def record(options: LoadOptions) -> dict[str, object]:
    """What spec.json records of the data read (the image-folder copy's identity and counts)."""
    from livar_bench.data.folder_index import folder_index

    found = source(options)
    if found is None or found[0] == "pickles":
        return {"dataset_source": PICKLES} if found else {}
    return {"dataset_source": str(found[1]), **folder_index(found[1], "cifar10", options.cache_dir).record()}


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    try:
        CIFAR10(str(root), train=True, download=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad checksum a RuntimeError
        raise DataNotFoundError(f"cifar10: download failed ({type(err).__name__}: {err}). {CIFAR10_HOW}") from None


def _load_pickles(folder: Path) -> DatasetBundle:
    for name in (*TRAIN_FILES, "test_batch", "batches.meta"):
        if not (folder / name).is_file():
            raise missing_file("cifar10", folder / name, CIFAR10_HOW)

    def split(names: tuple[str, ...]) -> ImageSplit:
        images, labels = [], []
        for name in names:
            raw = read_cifar_pickle(folder / name, "cifar10", CIFAR10_HOW)
            try:
                images.append(np.asarray(raw["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))  # rows: R, G, B planes
                labels.append(np.asarray(raw["labels"], dtype=np.int64))
            except (KeyError, ValueError, TypeError) as err:
                raise BenchError(f"cifar10: {folder / name} is not in the CIFAR-10 python format ({err}); download "
                                 f"and unpack it again") from None
            if len(labels[-1]) != len(images[-1]) or (len(labels[-1]) and (labels[-1].min() < 0 or labels[-1].max() > 9)):
                raise BenchError(f"cifar10: {folder / name} has {len(images[-1])} images but {len(labels[-1])} labels, "
                                 f"or labels outside 0..9; download and unpack it again")
        return ImageSplit(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))

    names = tuple(read_cifar_pickle(folder / "batches.meta", "cifar10", CIFAR10_HOW).get("label_names", CLASSES))
    if names != CLASSES:
        raise BenchError(f"cifar10: {folder / 'batches.meta'} names the classes {', '.join(map(str, names))}, not "
                         f"CIFAR-10's; download and unpack it again")
    return DatasetBundle("cifar10", split(TRAIN_FILES), split(("test_batch",)), CLASSES)


def load_cifar10(options: LoadOptions) -> DatasetBundle:
    """CIFAR-10 from the pickles or the image-folder copy (see the module docstring)."""
    from livar_bench.data.folder import bundle_from_index
    from livar_bench.data.folder_index import folder_index

    root = data_root(options, "cifar10", CIFAR10_HOW, create=options.download)
    found = source(options)
    if found is None:
        raise missing_file("cifar10", root / PICKLES, CIFAR10_HOW)
    kind, path = found
    if kind == "pickles":
        if not path.is_dir():
            _download(root)
        return _load_pickles(path)
    index = folder_index(path, "cifar10", options.cache_dir)
    _check_classes(index.classes, path)
    return bundle_from_index("cifar10", path, index, options)
