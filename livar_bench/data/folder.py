"""Any image folder as a dataset: ``--dataset folder:<path>`` (a folder, or a .tar/.tar.gz/.zip of one).

The layout, the class names, the split and the content identity come from ``folder_index.py``. Images
are decoded once into the uint8 cache (``cache.py``), keyed by the folder's content digest: at their own
size when every image is square and of one size (CIFAR's 32x32; resized on the device like CIFAR-100's
pickles), else resized once (bicubic) to the storage size, as the other folder datasets are.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from livar_bench.data.archive import Load, open_source
from livar_bench.data.base import DatasetBundle, ImageSplit, LoadOptions
from livar_bench.data.cache import cache_path, load_or_build
from livar_bench.data.folder_index import FolderIndex, folder_index, pooled
from livar_bench.errors import BenchError, DataNotFoundError

PREFIX = "folder:"
DECODE_VERSION = 1
FOLDER_HOW = (
    "a folder (or .tar/.tar.gz/.zip) of class folders, <class>/<image>, split 80/20 with a fixed seed, or of "
    "train/<class>/ and test/<class>/ folders (torchvision's ImageFolder convention); class names come from "
    "the folder names"
)


def is_folder(name: str) -> bool:
    return name.startswith(PREFIX)


def folder_path(name: str) -> Path:
    """The path of ``folder:<path>``; a clear error when it is empty or does not exist."""
    raw = name[len(PREFIX):].strip()
    if not raw:
        raise BenchError(f"--dataset {PREFIX}: give a folder or an archive after '{PREFIX}', e.g. {PREFIX}data/pets")
    path = Path(raw).expanduser()
    if not path.exists():
        raise DataNotFoundError(f"--dataset {name}: {path} does not exist; give {FOLDER_HOW}")
    return path


def _decode_one(item: tuple[str, Load, int | None, str]) -> tuple[str, np.ndarray]:
    """(path, RGB uint8 [H, W, 3]) of one image, resized to ``size`` x ``size`` unless ``size`` is None."""
    from PIL import Image

    rel, load, size, label = item
    try:
        with Image.open(io.BytesIO(load())) as img:
            rgb = img.convert("RGB")
            if size is not None and rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
            return rel, np.asarray(rgb, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # truncated, corrupt
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BenchError(f"{label}: cannot read image {rel} ({type(err).__name__}: {why}); replace or delete that "
                         f"file") from None


def decode_entries(path: Path, index: FolderIndex, splits: list[str], size: int | None,
                   label: str) -> dict[str, ImageSplit]:
    """Decode the images of ``splits`` in one pass over the source; ``size`` None keeps their own size
    (every image then has the index's common size)."""
    from livar_bench.progress import track
    from livar_bench.resources import check_decoded_size

    side = size if size is not None else index.image_size
    where = {rel: (split, pos) for split in splits for pos, (rel, _) in enumerate(getattr(index, split))}
    check_decoded_size(len(where), side, label)  # before allocating: print the estimate instead
    out = {s: np.empty((len(getattr(index, s)), side, side, 3), dtype=np.uint8) for s in splits}
    items = ((rel, load, size, label) for rel, _, load in open_source(path, label).walk(where.__contains__)
             if load is not None)
    seen: set[str] = set()
    for rel, arr in track(pooled(items, _decode_one), total=len(where), description=f"decoding {label}"):
        if arr.shape != (side, side, 3):  # only if the file changed between the scan and now
            raise BenchError(f"{label}: image {rel} changed while {path} was being read; rerun")
        split, pos = where[rel]
        out[split][pos] = arr
        seen.add(rel)
    if len(seen) != len(where):
        raise DataNotFoundError(f"{label}: {len(where) - len(seen)} image(s) found when {path} was scanned are gone "
                                f"from it; rerun to scan it again")
    return {s: ImageSplit(torch.from_numpy(out[s]).permute(0, 3, 1, 2).contiguous(),
                          torch.tensor([lab for _, lab in getattr(index, s)], dtype=torch.int64)) for s in splits}


def bundle_from_index(name: str, path: Path, index: FolderIndex, options: LoadOptions) -> DatasetBundle:
    """The dataset of a scanned folder, decoded through the cache (both splits in one pass when neither
    is cached). The cache is shared by every name that reads the same content (cifar10 and folder:)."""
    size = None if index.image_size is not None else options.storage_size
    key = {"content": index.content, "rule": index.split, "size": size or "native", "v": DECODE_VERSION}
    paths = {s: cache_path(options.cache_dir, "folder", s, key) for s in ("train", "test")}
    pending: dict[str, ImageSplit] = {}
    missing = [s for s, p in paths.items() if not p.is_file()]

    def build(split: str) -> ImageSplit:
        if split not in pending:  # also a cached file found damaged, which is decoded on its own
            pending.update(decode_entries(path, index, missing if split in missing else [split], size, name))
        return pending.pop(split)

    out = {s: load_or_build(p, lambda s=s: build(s)) for s, p in paths.items()}
    return DatasetBundle(name, out["train"], out["test"], index.classes)


def load_folder(name: str, options: LoadOptions) -> DatasetBundle:
    """``folder:<path>`` (see the module docstring and ``folder_index.py``)."""
    path = folder_path(name)
    return bundle_from_index(name, path, folder_index(path, name, options.cache_dir), options)


def folder_identity(name: str, cache_dir: str | None) -> dict[str, str]:
    """The run-id payload of ``folder:<path>``: its content instead of its path (a moved or re-packed
    copy of the same files keeps its run ids; other files get other ones)."""
    path = folder_path(name)
    return {"dataset": "folder", **folder_index(path, name, cache_dir).identity()}
