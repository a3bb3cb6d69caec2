"""Dataset loaders on small files written in the real on-disk formats, the decode cache, and errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from livar_bench.data import DATASETS, LoadOptions, load_dataset, resolve_name
from livar_bench.data.base import ImageSplit
from livar_bench.data.cache import load_or_build
from livar_bench.data.real import imagenet_r_split
from livar_bench.errors import BenchError, DataNotFoundError
from tests._shared import SHARED_DATA


def _colour(i: int) -> tuple[int, int, int]:
    """A distinct, JPEG-robust colour per index (channels far apart)."""
    return (40 * (i % 6) + 20, 40 * ((i // 6) % 6) + 20, 60 * ((i // 36) % 4) + 20)


def _solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (20, 14)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _mean_colour(img: torch.Tensor) -> np.ndarray:
    return img.float().mean(dim=(1, 2)).numpy()


def _options(root: Path, cache: Path, **kw) -> LoadOptions:
    return LoadOptions(data_root=str(root), cache_dir=str(cache), storage_size=kw.pop("storage_size", 8), **kw)


# --- CIFAR-100 -------------------------------------------------------------------------------------


def _write_cifar100(root: Path, n_train: int = 7, n_test: int = 3) -> dict[str, np.ndarray]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)  # rows: 1024 R, 1024 G, 1024 B
        fine = rng.integers(0, 100, size=n).tolist()
        record = {"filenames": [f"img{i}.png" for i in range(n)], "batch_label": name, "fine_labels": fine,
                  "coarse_labels": [f // 5 for f in fine], "data": data}
        with (folder / name).open("wb") as fh:
            pickle.dump(record, fh, protocol=2)
        arrays[name], arrays[name + "_labels"] = data, np.array(fine)
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    with (folder / "meta").open("wb") as fh:
        pickle.dump(meta, fh, protocol=2)
    return arrays


def test_cifar100_pickles(tmp_path):
    arrays = _write_cifar100(tmp_path / "data")
    bundle = load_dataset("cifar100", _options(tmp_path / "data", tmp_path / "cache"))
    assert bundle.num_classes == 100 and bundle.class_names[3] == "fine3"
    assert len(bundle.train) == 7 and len(bundle.test) == 3
    assert bundle.train.images.shape == (7, 3, 32, 32) and bundle.train.images.dtype == torch.uint8
    assert bundle.train.labels.tolist() == arrays["train_labels"].tolist()
    row = arrays["train"][4]
    # Pixel (y=2, x=5) of channel c is entry c * 1024 + 2 * 32 + 5 of the row.
    for c in range(3):
        assert int(bundle.train.images[4, c, 2, 5]) == int(row[c * 1024 + 2 * 32 + 5])
    assert torch.equal(bundle.test.images.reshape(3, -1), torch.from_numpy(arrays["test"]))


def test_cifar100_corrupt_pickle_is_a_bench_error(tmp_path):
    _write_cifar100(tmp_path / "data")
    (tmp_path / "data" / "cifar-100-python" / "train").write_bytes(b"\x80\x02garbage")
    with pytest.raises(BenchError, match="cifar100"):
        load_dataset("cifar100", _options(tmp_path / "data", tmp_path / "cache"))


# --- EuroSAT ---------------------------------------------------------------------------------------

EUROSAT_CLASSES = ["AnnualCrop", "Forest", "Highway"]


def _write_eurosat(root: Path) -> dict[str, list]:
    base = root / "eurosat"
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    i = 0
    for label, cls in enumerate(EUROSAT_CLASSES):
        for n in range(1, 6):
            rel = f"{cls}/{cls}_{n}.jpg"
            _solid(base / "2750" / rel, _colour(i), size=(64, 64))
            name = "train" if n <= 3 else ("val" if n == 4 else "test")
            split[name].append([rel, label, cls])
            i += 1
    (base / "split_zhou_EuroSAT.json").write_text(json.dumps(split))
    return split


def test_eurosat_folder_and_coop_split_then_cache_hit(tmp_path, monkeypatch):
    split = _write_eurosat(tmp_path / "data")
    opts = _options(tmp_path / "data", tmp_path / "cache")
    bundle = load_dataset("eurosat", opts)
    assert bundle.class_names == tuple(EUROSAT_CLASSES)
    assert len(bundle.train) == 9 and len(bundle.test) == 3  # val is unused
    assert bundle.train.images.shape == (9, 3, 64, 64)
    assert bundle.train.labels.tolist() == [label for _, label, _ in split["train"]]
    order = [(label, int(rel.split("_")[-1][:-4])) for rel, label, _ in split["train"]]
    for img, (label, n) in zip(bundle.train.images, order, strict=True):
        np.testing.assert_allclose(_mean_colour(img), _colour(label * 5 + n - 1), atol=3)
    assert len(list((tmp_path / "cache").glob("eurosat-*.pt"))) == 2

    # Second load: served from the cache, no image is decoded (the files are even gone).
    import livar_bench.data.real as real

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(real, "decode_images", no_decoding)
    for path in (tmp_path / "data" / "eurosat" / "2750").rglob("*.jpg"):
        path.unlink()
    again = load_dataset("eurosat", opts)
    assert torch.equal(again.train.images, bundle.train.images)
    assert torch.equal(again.test.labels, bundle.test.labels)


def test_eurosat_changed_split_does_not_reuse_stale_cache(tmp_path):
    split = _write_eurosat(tmp_path / "data")
    opts = _options(tmp_path / "data", tmp_path / "cache")
    first = load_dataset("eurosat", opts)
    # Same number of files, same first file, different assignment of the rest: must be re-decoded.
    split["train"][1], split["test"][0] = split["test"][0], split["train"][1]
    (tmp_path / "data" / "eurosat" / "split_zhou_EuroSAT.json").write_text(json.dumps(split))
    second = load_dataset("eurosat", opts)
    assert not torch.equal(first.train.images, second.train.images)


# --- CUB-200-2011 ----------------------------------------------------------------------------------


def _write_cub(root: Path) -> None:
    base = root / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    lines = {"images": [], "labels": [], "split": []}
    image_id = 1
    for c, cls in enumerate(classes):
        for n in range(4):
            rel = f"{cls}/{cls.split('.')[1]}_{n:04d}_{image_id}.jpg"
            _solid(base / "images" / rel, _colour(image_id), size=(30 + 7 * n, 20 + 3 * c))  # varied sizes
            lines["images"].append(f"{image_id} {rel}")
            lines["labels"].append(f"{image_id} {c + 1}")
            lines["split"].append(f"{image_id} {1 if n < 3 else 0}")
            image_id += 1
    (base / "images.txt").write_text("\n".join(lines["images"]) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(lines["labels"]) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(lines["split"]) + "\n")
    (base / "classes.txt").write_text("\n".join(f"{i + 1} {c}" for i, c in enumerate(classes)) + "\n")


def test_cub200_text_files_and_images(tmp_path):
    _write_cub(tmp_path / "data")
    bundle = load_dataset("cub-200", _options(tmp_path / "data", tmp_path / "cache", storage_size=12))
    assert bundle.name == "cub200" and bundle.class_names == ("001.Black_footed_Albatross", "002.Laysan_Albatross")
    assert len(bundle.train) == 6 and len(bundle.test) == 2
    assert bundle.train.images.shape == (6, 3, 12, 12)  # every size resized once to storage_size
    assert bundle.train.labels.tolist() == [0, 0, 0, 1, 1, 1] and bundle.test.labels.tolist() == [0, 1]
    ids_train = [1, 2, 3, 5, 6, 7]
    for img, image_id in zip(bundle.train.images, ids_train, strict=True):
        np.testing.assert_allclose(_mean_colour(img), _colour(image_id), atol=3)


def test_cub200_missing_image_is_a_data_error(tmp_path):
    _write_cub(tmp_path / "data")
    next((tmp_path / "data" / "CUB_200_2011" / "images").rglob("*.jpg")).unlink()
    with pytest.raises(DataNotFoundError, match="cannot read image"):
        load_dataset("cub200", _options(tmp_path / "data", tmp_path / "cache"))


# --- ImageNet-R ------------------------------------------------------------------------------------


def _write_imagenet_r(root: Path, classes: int = 3, per_class: int = 10) -> None:
    base = root / "imagenet-r"
    for c in range(classes):
        for n in range(per_class):
            # PNG keeps colours exact, so every image can be identified after loading.
            _solid(base / f"n0{c}000" / f"art_{n}.png", _colour(c * per_class + n), size=(16 + n, 16))
    (base / "README.txt").write_text("not an image\n")
    (base / "n00000" / "notes.txt").write_text("not an image either\n")


def test_imagenet_r_seeded_80_20_split_same_twice(tmp_path):
    _write_imagenet_r(tmp_path / "data")
    a = load_dataset("imagenet-r", _options(tmp_path / "data", tmp_path / "cache_a"))
    b = load_dataset("imr", _options(tmp_path / "data", tmp_path / "cache_b"))  # alias, no shared cache
    assert a.class_names == ("n00000", "n01000", "n02000")
    assert len(a.train) == 24 and len(a.test) == 6
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    # Disjoint cover: the identifying colours of train and test together are every image exactly once.
    seen = []
    for split in (a.train, a.test):
        for img, label in zip(split.images, split.labels, strict=True):
            colour = tuple(int(round(v)) for v in _mean_colour(img))
            index = [_colour(i) for i in range(30)].index(colour)
            assert index // 10 == int(label)
            seen.append(index)
    assert sorted(seen) == list(range(30))


def test_imagenet_r_split_function_is_seeded():
    files = [(f"c/{i}.jpg", 0) for i in range(50)]
    train, test = imagenet_r_split(files)
    assert len(test) == 10 and sorted(train + test) == list(range(50))
    assert imagenet_r_split(files) == (train, test)
    assert imagenet_r_split(files, seed=1) != (train, test)


# --- cache, registry, errors -----------------------------------------------------------------------


def test_load_or_build_builds_once(tmp_path):
    calls = []

    def build() -> ImageSplit:
        calls.append(1)
        return ImageSplit(torch.full((2, 3, 4, 4), 7, dtype=torch.uint8), torch.tensor([0, 1]))

    path = tmp_path / "sub" / "x.pt"
    first = load_or_build(path, build)
    second = load_or_build(path, build)
    assert len(calls) == 1
    assert torch.equal(first.images, second.images) and second.labels.tolist() == [0, 1]
    assert not list(path.parent.glob("*.tmp*"))  # written atomically, no temp file left


@pytest.mark.parametrize("name,expected,how", [
    ("cifar100", "cifar-100-python", "cifar-100-python.tar.gz"),
    ("eurosat", "eurosat/2750", "EuroSAT.zip"),
    ("cub200", "CUB_200_2011/images.txt", "CUB_200_2011.tgz"),
    ("imagenet-r", "imagenet-r", "imagenet-r.tar"),
])
def test_missing_dataset_names_expected_path_and_how_to_get_it(tmp_path, name, expected, how):
    with pytest.raises(DataNotFoundError) as info:
        load_dataset(name, _options(tmp_path, tmp_path / "cache"))
    message = str(info.value)
    assert str(tmp_path / expected) in message and how in message and "\n" not in message
    for root in (None, str(tmp_path / "nonexistent")):
        with pytest.raises(DataNotFoundError, match="--data-root") as info:
            load_dataset(name, LoadOptions(data_root=root))
        assert how in str(info.value)


def test_registry_names_aliases_and_unknown():
    assert resolve_name("CIFAR-100") == "cifar100" and resolve_name("cub") == "cub200"
    assert resolve_name("CIFAR-10") == "cifar10"
    with pytest.raises(BenchError, match="Did you mean cifar10"):
        resolve_name("cifar11")
    assert {"digits", "synthetic", "cifar10", "cifar100", "imagenet-r", "eurosat", "cub200"} <= set(DATASETS)


def test_offline_datasets_and_seeded_subsample():
    digits = load_dataset("digits")
    assert len(digits.train) + len(digits.test) == 1797 and digits.num_classes == 10
    assert digits.train.images.shape[1:] == (3, 8, 8)
    assert torch.bincount(digits.test.labels).min() >= 30  # stratified 80/20
    small = load_dataset("digits", max_train=100, max_test=40)
    again = load_dataset("digits", max_train=100, max_test=40)
    assert len(small.train) == 100 and len(small.test) == 40
    assert torch.equal(small.train.labels, again.train.labels)
    synthetic = load_dataset("synthetic")
    assert len(synthetic.train) == 600 and torch.equal(synthetic.train.images, load_dataset("synthetic").train.images)


# --- real files, when present ----------------------------------------------------------------------


@pytest.mark.skipif(not (SHARED_DATA / "cifar-100-python").is_dir(), reason=f"no CIFAR-100 under {SHARED_DATA}")
def test_real_cifar100(tmp_path):
    bundle = load_dataset("cifar100", LoadOptions(data_root=str(SHARED_DATA), cache_dir=str(tmp_path)))
    assert (len(bundle.train), len(bundle.test)) == (50_000, 10_000)
    assert torch.bincount(bundle.train.labels).tolist() == [500] * 100
    assert bundle.class_names[0] == "apple"


@pytest.mark.slow
@pytest.mark.parametrize("name,folder,sizes", [
    ("eurosat", "eurosat", (13_500, 8_100)),
    ("cub200", "CUB_200_2011", (5_994, 5_794)),
    ("imagenet-r", "imagenet-r", None),
])
def test_real_image_datasets(tmp_path, name, folder, sizes):
    if not (SHARED_DATA / folder).is_dir():
        pytest.skip(f"no {folder} under {SHARED_DATA}")
    bundle = load_dataset(name, LoadOptions(data_root=str(SHARED_DATA), cache_dir=str(tmp_path), storage_size=32))
    if sizes is not None:
        assert (len(bundle.train), len(bundle.test)) == sizes
    else:
        assert bundle.num_classes == 200 and abs(len(bundle.test) / (len(bundle.train) + len(bundle.test)) - 0.2) < 0.01
