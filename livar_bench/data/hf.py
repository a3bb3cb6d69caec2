"""Any image-classification dataset in Hugging Face ``datasets`` format: ``--dataset hf:<source>``.

``<source>`` is a folder written by ``DatasetDict.save_to_disk`` (read with ``load_from_disk``, fully
offline), a local ``imagefolder`` data directory (``train/<class>/<image>``, ``test/<class>/<image>``,
optionally a ``metadata.csv``; any folder without save_to_disk's ``dataset_dict.json``/``state.json``;
read with ``load_dataset("imagefolder", data_dir=...)``, fully offline, its Arrow files written under the
cache folder), or a Hub id such as ``uoft-cs/cifar100`` (read with ``load_dataset``: from the local
Hugging Face cache when offline, downloaded when online). The image column is the first ``Image``
feature, the label column the first ``ClassLabel`` feature (its names become the class names); the
splits are ``train`` and ``test``. A column named ``domain`` (class label, string or integer) gives each
image a domain, which ``--partition domain`` deals to clients. Images are decoded once, kept at their native size when all share
one (CIFAR's 32x32), otherwise resized to ``storage_size``, and cached like every other dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from livar_bench.data.base import DatasetBundle, ImageSplit, LoadOptions
from livar_bench.data.cache import cache_path, load_or_build
from livar_bench.errors import BenchError, DataNotFoundError

PREFIX = "hf:"
HF_HOW = (
    "give a folder written by datasets' save_to_disk (with train and test splits), an imagefolder data "
    "directory (train/<class>/<image>, test/<class>/<image>), or a Hub id whose files "
    "are in the local Hugging Face cache (run `python -c \"import datasets; datasets.load_dataset('ID')\"` on "
    "a machine with internet access first); needs `pip install 'livar-bench[hf]'`"
)


def is_hf(name: str) -> bool:
    return name.startswith(PREFIX)


def _saved(path: Path) -> bool:
    """Whether ``path`` was written by ``save_to_disk`` (a DatasetDict or a single Dataset)."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _open(source: str, cache_dir: str | None = None) -> Any:
    try:
        import datasets
    except ImportError:
        raise BenchError(f"--dataset {PREFIX}{source}: the Hugging Face datasets package is missing; {HF_HOW}") from None
    path = Path(source).expanduser()
    if not path.exists() and (source.startswith(("/", ".", "~")) or path.parent.exists() and path.parent != Path(".")):
        raise DataNotFoundError(f"--dataset {PREFIX}{source}: folder {path} does not exist; {HF_HOW}")
    try:
        if path.is_dir() and not _saved(path):  # an imagefolder data directory: read offline by datasets
            from livar_bench.data.cache import default_cache_dir

            arrow = Path(cache_dir) if cache_dir else default_cache_dir()
            return datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=str(arrow / "hf-imagefolder"))
        if path.exists():
            return datasets.load_from_disk(str(path))
        return datasets.load_dataset(source)
    except Exception as err:  # noqa: BLE001 - datasets and the hub client raise many unrelated types
        why = str(err).splitlines()[0] if isinstance(err, OSError | ValueError) and str(err) else type(err).__name__
        raise DataNotFoundError(f"--dataset {PREFIX}{source}: cannot load it ({why}); {HF_HOW}") from None


def _columns(split: Any, source: str) -> tuple[str, str, list[str]]:
    import datasets

    image_col = next((k for k, f in split.features.items() if isinstance(f, datasets.Image)), None)
    label_col = next((k for k, f in split.features.items() if isinstance(f, datasets.ClassLabel)), None)
    if image_col is None or label_col is None:
        raise BenchError(
            f"--dataset {PREFIX}{source}: needs an Image column and a ClassLabel column, found "
            f"{', '.join(f'{k} ({type(f).__name__})' for k, f in split.features.items())}"
        )
    return image_col, label_col, list(split.features[label_col].names)


DOMAIN_COLUMN = "domain"


def _domain_names(data: Any) -> tuple[str, ...] | None:
    """Names of the ``domain`` column's values over both splits (ids index them), or None without one."""
    import datasets

    if DOMAIN_COLUMN not in data["train"].features:
        return None
    feature = data["train"].features[DOMAIN_COLUMN]
    if isinstance(feature, datasets.ClassLabel):
        return tuple(feature.names)
    values = sorted({v for split in ("train", "test") for v in data[split][DOMAIN_COLUMN]})
    return tuple(str(v) for v in values)


def _domain_ids(split: Any, names: tuple[str, ...] | None) -> torch.Tensor | None:
    import datasets

    if names is None:
        return None
    values = split[DOMAIN_COLUMN]
    if not isinstance(split.features[DOMAIN_COLUMN], datasets.ClassLabel):
        index = {name: i for i, name in enumerate(names)}
        values = [index[str(v)] for v in values]
    return torch.tensor(values, dtype=torch.int64)


def _decode(split: Any, image_col: str, label_col: str, size: int,
            domain_names: tuple[str, ...] | None = None) -> ImageSplit:
    from PIL import Image

    from livar_bench.progress import track
    from livar_bench.resources import check_decoded_size

    check_decoded_size(len(split), size, "hf")  # an upper bound when images keep their own size
    arrays = []
    for img in track(split[image_col], total=len(split), description="decoding images"):
        arrays.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
    if len({a.shape for a in arrays}) != 1:  # varying sizes: resize once, as the folder loaders do
        arrays = [np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BICUBIC)) for a in arrays]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # [N, 3, H, W]
    labels = torch.tensor(split[label_col], dtype=torch.int64)
    return ImageSplit(images, labels, _domain_ids(split, domain_names))


def load_hf(name: str, options: LoadOptions) -> DatasetBundle:
    """Load ``hf:<source>`` (see the module docstring)."""
    source = name[len(PREFIX):]
    if not source:
        raise BenchError(f"--dataset {PREFIX}: give a save_to_disk folder or a Hub id after '{PREFIX}'")
    data = _open(source, options.cache_dir)
    missing = [s for s in ("train", "test") if s not in data]
    if missing:
        raise BenchError(f"--dataset {name}: no {' or '.join(missing)} split (has {', '.join(data)})")
    image_col, label_col, class_names = _columns(data["train"], source)
    domain_names = _domain_names(data)
    out = {}
    for split in ("train", "test"):
        part = data[split]
        key = {"source": source, "fingerprint": getattr(part, "_fingerprint", None), "n": len(part),
               "size": options.storage_size, **({"domains": list(domain_names)} if domain_names else {})}
        out[split] = load_or_build(cache_path(options.cache_dir, "hf", split, key),
                                   lambda p=part: _decode(p, image_col, label_col, options.storage_size, domain_names))
    return DatasetBundle(name, out["train"], out["test"], tuple(class_names), domain_names=domain_names)
