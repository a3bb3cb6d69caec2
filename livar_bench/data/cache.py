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
from livar_bench.errors import DataNotFoundError

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("LIVAR_BENCH_CACHE", Path.home() / ".cache" / "livar-bench"))


def cache_path(cache_dir: str | None, dataset: str, split: str, key: dict) -> Path:
    """File name includes a hash of everything that changes the decoded tensors (files, size, version)."""
    digest = json_digest({**key, "v": CACHE_VERSION}, 16)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return root / f"{dataset}-{split}-{digest}.pt"


def load_or_build(path: Path, build: Callable[[], ImageSplit]) -> ImageSplit:
    """Load a cached split (memory-mapped) or build it and write the cache atomically."""
    if path.is_file():
        data = torch.load(path, mmap=True, weights_only=True)
        return ImageSplit(data["images"], data["labels"])
    split = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"images": split.images, "labels": split.labels}, tmp)
    os.replace(tmp, path)
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

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, arr in enumerate(track(pool.map(one, paths), total=len(paths), description=description)):
            out[i] = arr
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
