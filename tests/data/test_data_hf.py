"""hf:<source> datasets: a save_to_disk folder written by the test is read through `datasets`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

datasets = pytest.importorskip("datasets")

from livar_bench.data import LoadOptions, load_dataset  # noqa: E402
from livar_bench.errors import BenchError, DataNotFoundError  # noqa: E402


def _write(path, sizes=((12, 12),), n_train=9, n_test=3, label_col="fine_label"):
    from PIL import Image

    rng = np.random.default_rng(0)
    features = datasets.Features({"img": datasets.Image(), label_col: datasets.ClassLabel(names=["cat", "dog", "eel"])})

    def split(n):
        images = [Image.fromarray(rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8)) for i in range(n)]
        return datasets.Dataset.from_dict({"img": images, label_col: [i % 3 for i in range(n)]}, features=features)

    data = datasets.DatasetDict({"train": split(n_train), "test": split(n_test)})
    data.save_to_disk(str(path))
    return data


def test_save_to_disk_folder_loads_with_pixels_labels_and_names(tmp_path):
    data = _write(tmp_path / "ds")
    bundle = load_dataset(f"hf:{tmp_path / 'ds'}", LoadOptions(cache_dir=str(tmp_path / "cache")))
    assert bundle.class_names == ("cat", "dog", "eel")
    assert bundle.train.images.shape == (9, 3, 12, 12) and bundle.test.images.shape == (3, 3, 12, 12)
    first = np.array(data["train"][0]["img"].convert("RGB"))
    assert torch.equal(bundle.train.images[0], torch.from_numpy(first).permute(2, 0, 1))
    assert bundle.train.labels.tolist() == [i % 3 for i in range(9)]
    # second load is served from the decode cache
    again = load_dataset(f"hf:{tmp_path / 'ds'}", LoadOptions(cache_dir=str(tmp_path / "cache")))
    assert torch.equal(again.train.images, bundle.train.images)
    assert len(list((tmp_path / "cache").glob("hf-*.pt"))) == 2


def test_varying_sizes_are_resized_once_to_the_storage_size(tmp_path):
    _write(tmp_path / "ds", sizes=((10, 14), (20, 8)))
    bundle = load_dataset(f"hf:{tmp_path / 'ds'}", LoadOptions(cache_dir=str(tmp_path / "c"), storage_size=16))
    assert bundle.train.images.shape == (9, 3, 16, 16)


def test_missing_source_and_wrong_columns_are_clear_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="save_to_disk"):
        load_dataset(f"hf:{tmp_path / 'nowhere'}/x", LoadOptions(cache_dir=str(tmp_path / "c")))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"x": [1, 2]}),
                          "test": datasets.Dataset.from_dict({"x": [3]})}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(BenchError, match="Image column and a ClassLabel column"):
        load_dataset(f"hf:{tmp_path / 'bad'}", LoadOptions(cache_dir=str(tmp_path / "c")))


def test_a_federated_run_on_an_hf_folder(tmp_path, tiny_spec_values):
    from livar_bench.config import make_spec
    from livar_bench.federation import run_federation

    _write(tmp_path / "ds", n_train=30, n_test=6)
    spec = make_spec({**tiny_spec_values, "dataset": f"hf:{tmp_path / 'ds'}", "cache_dir": str(tmp_path / "c"),
                      "min_client_samples": 2})
    outcome = run_federation(spec, tmp_path / "out")
    assert (outcome.run_dir / "DONE").is_file() and 0.0 <= outcome.final["acc"] <= 1.0


def test_a_local_imagefolder_directory_is_read_offline(tmp_path, monkeypatch):
    """datasets' imagefolder builder reads train/<class>/ and test/<class>/ with no network (offline set)."""
    from PIL import Image

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    colours = {}
    for split, n in (("train", 3), ("test", 2)):
        for c, cls in enumerate(["ant", "bee"]):
            for k in range(n):
                colour = (50 * c + 10 * k, 100, 7 if split == "train" else 200)
                path = tmp_path / "pics" / split / cls / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (6, 6), colour).save(path)
                colours.setdefault(split, []).append((colour, c))
    bundle = load_dataset(f"hf:{tmp_path / 'pics'}", LoadOptions(cache_dir=str(tmp_path / "cache")))
    assert bundle.class_names == ("ant", "bee")
    assert bundle.train.images.shape == (6, 3, 6, 6) and len(bundle.test) == 4
    for split in ("train", "test"):
        part = getattr(bundle, split)
        got = sorted((tuple(int(v) for v in img[:, 0, 0]), int(label)) for img, label in zip(part.images, part.labels, strict=True))
        assert got == sorted(colours[split])
    assert list((tmp_path / "cache").glob("hf-imagefolder/*"))  # datasets' Arrow files under our cache folder
