"""cifar10 from torchvision's pickles and from the image-folder copy (.tar.gz or extracted), small files
written in the real layouts; the image copy and folder:<the same files> give the same run."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from livar_bench.data import LoadOptions, load_dataset
from livar_bench.data import folder_index as fi
from livar_bench.errors import BenchError, DataNotFoundError

# torchvision.datasets.CIFAR10.classes, written out (the order of batches.meta's label_names)
TORCHVISION_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _fresh_index_memory():
    fi._INDEXES.clear()
    yield
    fi._INDEXES.clear()


def write_pickles(root: Path, per_batch: int = 4) -> dict[str, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays: dict[str, list] = {"train": [], "train_labels": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)  # rows: 1024 R, 1024 G, 1024 B
        labels = rng.integers(0, 10, size=per_batch).tolist()
        with (folder / name).open("wb") as fh:
            pickle.dump({"batch_label": name, "labels": labels, "data": data,
                         "filenames": [f"{i}.png" for i in range(per_batch)]}, fh, protocol=2)
        key = "test" if name == "test_batch" else "train"
        arrays.setdefault(key, []).append(data)
        arrays.setdefault(key + "_labels", []).append(np.array(labels))
    with (folder / "batches.meta").open("wb") as fh:
        pickle.dump({"label_names": TORCHVISION_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, fh)
    return {k: np.concatenate(v) for k, v in arrays.items()}


def write_jpeg_copy(folder: Path, n_train: int = 3, n_test: int = 2, classes=TORCHVISION_CLASSES) -> None:
    """train/<class>/NNNN.jpg and test/<class>/NNNN.jpg, 32x32 noise JPEGs, as cifar10_jpg.tar.gz holds."""
    rng = np.random.default_rng(1)
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in classes:
            (folder / split / cls).mkdir(parents=True)
            for k in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / split / cls / f"{k:04d}.jpg", quality=90)


def pack(folder: Path, root: Path) -> Path:
    """``root/cifar10_jpg.tar.gz`` holding ``folder``'s train/ and test/ (no wrapping folder, as the real one)."""
    root.mkdir(parents=True, exist_ok=True)
    dest = root / "cifar10_jpg.tar.gz"
    with tarfile.open(dest, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(folder / split, arcname=split)
    return dest


def test_pickles_give_torchvision_classes_labels_and_pixels(tmp_path):
    arrays = write_pickles(tmp_path / "data")
    bundle = load_dataset("cifar10", LoadOptions(data_root=str(tmp_path / "data"), cache_dir=str(tmp_path / "c")))
    assert bundle.class_names == tuple(TORCHVISION_CLASSES)
    assert (len(bundle.train), len(bundle.test)) == (20, 4)
    assert bundle.train.labels.tolist() == arrays["train_labels"].tolist()
    row = arrays["train"][6]  # batch 2, image 2: pixel (y=3, x=7) of channel c is entry c * 1024 + 3 * 32 + 7
    for c in range(3):
        assert int(bundle.train.images[6, c, 3, 7]) == int(row[c * 1024 + 3 * 32 + 7])
    assert torch.equal(bundle.test.images.reshape(4, -1), torch.from_numpy(arrays["test"]))


def test_image_copy_from_the_archive_or_extracted_equals_folder(tmp_path):
    write_jpeg_copy(tmp_path / "extracted")
    pack(tmp_path / "extracted", tmp_path / "root")
    options = LoadOptions(data_root=str(tmp_path / "root"), cache_dir=str(tmp_path / "c1"))
    bundle = load_dataset("cifar10", options)
    assert bundle.class_names == tuple(TORCHVISION_CLASSES)
    assert bundle.train.images.shape == (30, 3, 32, 32)  # 32x32 kept as it is
    assert bundle.train.labels.tolist() == [c for c in range(10) for _ in range(3)]
    first = np.array(Image.open(tmp_path / "extracted" / "train" / "airplane" / "0000.jpg").convert("RGB"))
    assert torch.equal(bundle.train.images[0], torch.from_numpy(first).permute(2, 0, 1))
    other = load_dataset(f"folder:{tmp_path / 'extracted'}", LoadOptions(cache_dir=str(tmp_path / "c2")))
    assert torch.equal(other.train.images, bundle.train.images) and torch.equal(other.test.labels, bundle.test.labels)
    assert other.class_names == bundle.class_names


def test_the_image_copy_has_its_own_run_ids(tmp_path):
    from livar_bench.config import make_spec

    write_pickles(tmp_path / "pickles")
    write_jpeg_copy(tmp_path / "copy" / "cifar10_jpg")
    pack(tmp_path / "copy" / "cifar10_jpg", tmp_path / "archive")
    ids = {root: make_spec(dict(dataset="cifar10", data_root=str(tmp_path / root), cache_dir=str(tmp_path / "c"))).run_id
           for root in ("pickles", "copy", "archive")}
    assert ids["copy"] == ids["archive"]  # the same files, extracted or not
    assert ids["pickles"] != ids["copy"]  # lossy JPEGs are not the original pixels


def test_pickles_are_preferred_and_wrong_class_folders_refused(tmp_path):
    write_pickles(tmp_path / "both")
    write_jpeg_copy(tmp_path / "both" / "cifar10_jpg")
    bundle = load_dataset("cifar10", LoadOptions(data_root=str(tmp_path / "both"), cache_dir=str(tmp_path / "c")))
    assert len(bundle.train) == 20  # the pickles' 5 x 4, not the copy's 30
    write_jpeg_copy(tmp_path / "wrong" / "cifar10_jpg", classes=[f"c{i}" for i in range(10)])
    with pytest.raises(BenchError, match="not CIFAR-10's .* use --dataset folder:"):
        load_dataset("cifar10", LoadOptions(data_root=str(tmp_path / "wrong"), cache_dir=str(tmp_path / "c")))


def test_download_fetches_the_pickles_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeCIFAR10:  # stands in for the network: writes the files torchvision would unpack
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_pickles(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    bundle = load_dataset("cifar10", LoadOptions(data_root=str(tmp_path / "new"), download=True))
    assert calls == [(str(tmp_path / "new"), True, True)] and len(bundle.train) == 20


def test_missing_files_say_how_to_get_them(tmp_path):
    from livar_bench.config import make_spec
    from livar_bench.experiments.sweep import missing_data

    for root in (None, str(tmp_path)):
        with pytest.raises(DataNotFoundError, match="cifar-10-python.tar.gz.*cifar10_jpg.tar.gz") as info:
            load_dataset("cifar10", LoadOptions(data_root=root))
        assert "\n" not in str(info.value)
    problems = missing_data([make_spec(dict(dataset="cifar-10", data_root=str(tmp_path)))])
    assert len(problems) == 1 and "cifar10_jpg.tar.gz" in problems[0]
    write_jpeg_copy(tmp_path / "cifar10" / "cifar10_jpg")  # <root>/cifar10/cifar10_jpg/ is looked at too
    assert missing_data([make_spec(dict(dataset="cifar10", data_root=str(tmp_path)))]) == []


def test_a_run_on_the_image_copy_equals_one_on_folder(tmp_path, tiny_spec_values):
    """`--dataset cifar10` (the .tar.gz) and `--dataset folder:<extracted>` train on the same tensors in the
    same order: every metric of every round is equal."""
    from livar_bench.config import make_spec
    from livar_bench.federation import run_federation

    write_jpeg_copy(tmp_path / "extracted", n_train=6, n_test=2)
    pack(tmp_path / "extracted", tmp_path / "root")
    values = {**tiny_spec_values, "num_clients": 3, "min_client_samples": 2, "max_train_samples": 48,
              "cache_dir": str(tmp_path / "cache"), "method": "livar"}
    runs = {}
    for name, extra in (("cifar10", {"dataset": "cifar10", "data_root": str(tmp_path / "root")}),
                        ("folder", {"dataset": f"folder:{tmp_path / 'extracted'}"})):
        outcome = run_federation(make_spec({**values, **extra}), tmp_path / f"out_{name}")
        frame = pd.read_csv(outcome.run_dir / "metrics.csv")
        runs[name] = frame[frame.split != "cost"][["round", "split", "metric", "value"]].reset_index(drop=True)
    assert len(runs["cifar10"]) > 4
    pd.testing.assert_frame_equal(runs["cifar10"], runs["folder"], check_exact=True)
