"""Decode-once cache: image folders become one uint8 tensor file, memory-mapped on later loads."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from livar_bench.data.base import ImageSplit
from livar_bench.digest import json_digest
from livar_bench.errors import BenchError, DataNotFoundError
from livar_bench.resources import check_decoded_size
from livar_bench.store import DamagedFile, atomic_file, set_aside, sweep_temp_folders

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("LIVAR_BENCH_CACHE", Path.home() / ".cache" / "livar-bench"))


def cache_path(cache_dir: str | None, dataset: str, split: str, key: dict) -> Path:
    """File name includes a hash of everything that changes the decoded tensors (files, size, version)."""
    digest = json_digest({**key, "v": CACHE_VERSION}, 16)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return root / f"{dataset}-{split}-{digest}.pt"


def read_cached(path: Path) -> ImageSplit:
    """A cached split, memory-mapped, checked for shape: uint8 [N, 3, S, S] images, int64 [N] labels >= 0.

    Raises:
        DamagedFile: truncated, garbage, or not a split of this shape.
        BenchError: the file exists but cannot be read (permissions).
    """
    try:
        data = torch.load(path, mmap=True, weights_only=True)
        split = ImageSplit(data["images"], data["labels"], data.get("domains"))
        ok = (split.labels.dtype == torch.int64 and split.images.shape[2] == split.images.shape[3]
              and len(split) > 0 and int(split.labels.min()) >= 0)
        if ok:
            split.images[-1].sum()  # touch the last image: a short file fails here, not mid-training
    except PermissionError as err:
        raise BenchError(f"cannot read the image cache {path} ({err.strerror}); fix its permissions") from None
    except Exception as err:  # noqa: BLE001 (truncated zip, garbage pickle, mmap EINVAL, missing keys, shapes)
        raise DamagedFile(f"unreadable ({type(err).__name__})") from None
    if not ok:
        raise DamagedFile("not a split of decoded images")
    return split


def load_or_build(path: Path, build: Callable[[], ImageSplit]) -> ImageSplit:
    """Load a cached split (memory-mapped) or build it and write the cache atomically.

    A damaged cache file (truncated, garbage, wrong shapes) is set aside as ``<name>.damaged`` with one
    warning line and rebuilt.
    """
    if path.is_file():
        try:
            return read_cached(path)
        except DamagedFile as err:
            set_aside(path, str(err), "the images are decoded again")
    sweep_temp_folders([path.parent])  # a killed decode's half-written file
    split = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as sink:
        domains = {} if split.domains is None else {"domains": split.domains}
        torch.save({"images": split.images, "labels": split.labels, **domains}, sink)
    return split


def decode_images(paths: Sequence[Path], size: int, description: str = "decoding images") -> torch.Tensor:
    """Decode image files to RGB, resize to size x size (bicubic) once, return uint8 [N, 3, size, size]."""
    from PIL import Image

    from livar_bench.progress import track

    def one(path: Path) -> np.ndarray:
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
                return np.asarray(rgb, dtype=np.uint8)
        except (OSError, ValueError) as err:  # missing, truncated or not an image (UnidentifiedImageError)
            raise DataNotFoundError(
                f"cannot read image {path} ({type(err).__name__}); re-extract the dataset archive"
            ) from None

    check_decoded_size(len(paths), size, description)  # before allocating: print the estimate instead
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, arr in enumerate(track(pool.map(one, paths), total=len(paths), description=description)):
            out[i] = arr
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
