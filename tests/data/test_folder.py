"""folder:<path> datasets (ImageFolder convention) in a folder, .tar, .tar.gz and .zip; their content identity."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from livar_bench.data import LoadOptions, load_dataset
from livar_bench.data import folder_index as fi
from livar_bench.errors import BenchError, DataNotFoundError

CLASSES = ["cat", "dog", "eel"]


def _colour(i: int) -> tuple[int, int, int]:
    """A distinct colour per index (PNG keeps it exact, so each decoded image is identifiable)."""
    return (37 * i % 256, (91 * i + 40) % 256, (53 * i + 100) % 256)


def _image(path: Path, i: int, size: tuple[int, int] = (10, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, _colour(i)).save(path)


def write_split_layout(root: Path, n_train: int = 4, n_test: int = 2, size=(10, 10)) -> dict[str, list[tuple[int, int]]]:
    """train/<class>/ and test/<class>/ of solid PNGs; returns split -> [(colour index, label)] in file order."""
    made: dict[str, list[tuple[int, int]]] = {"train": [], "test": []}
    i = 0
    for split, n in (("train", n_train), ("test", n_test)):
        for label, cls in enumerate(CLASSES):
            for k in range(n):
                _image(root / split / cls / f"{k:03d}.png", i, size)
                made[split].append((i, label))
                i += 1
    return made


def _identify(images: torch.Tensor) -> list[int]:
    """Colour index of each decoded solid image."""
    table = {_colour(i): i for i in range(200)}
    return [table[tuple(int(v) for v in img[:, 0, 0])] for img in images]


def _tar(src: Path, dest: Path, mode: str, wrap: str | None = None) -> Path:
    with tarfile.open(dest, mode) as tar:
        for path in sorted(src.rglob("*")):
            tar.add(path, arcname=str(Path(wrap or "") / path.relative_to(src)), recursive=False)
    return dest


def _zip(src: Path, dest: Path, wrap: str | None = None) -> Path:
    with zipfile.ZipFile(dest, "w") as archive:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                archive.write(path, str(Path(wrap or "") / path.relative_to(src)))
    return dest


def _opts(tmp_path: Path, **kw) -> LoadOptions:
    return LoadOptions(cache_dir=str(tmp_path / "cache"), storage_size=kw.pop("storage_size", 8), **kw)


@pytest.fixture(autouse=True)
def _fresh_index_memory():
    fi._INDEXES.clear()  # each test's folders are new; the in-process memory must not carry over
    yield
    fi._INDEXES.clear()


def test_train_test_folders_give_classes_labels_and_pixels(tmp_path):
    made = write_split_layout(tmp_path / "pets")
    bundle = load_dataset(f"folder:{tmp_path / 'pets'}", _opts(tmp_path))
    assert bundle.class_names == tuple(CLASSES) and bundle.num_classes == 3
    assert bundle.train.images.shape == (12, 3, 10, 10)  # one common square size: kept as it is
    for split in ("train", "test"):
        part = getattr(bundle, split)
        assert _identify(part.images) == [i for i, _ in made[split]]
        assert part.labels.tolist() == [label for _, label in made[split]]


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip", "zip-wrapped", "tar.gz-wrapped"])
def test_archives_read_without_extracting_equal_the_folder(tmp_path, kind):
    write_split_layout(tmp_path / "pets")
    folder = load_dataset(f"folder:{tmp_path / 'pets'}", _opts(tmp_path))
    ext, _, wrapped = kind.partition("-")
    wrap = "pets" if wrapped else None
    dest = tmp_path / f"pets.{ext}"
    if ext == "zip":
        _zip(tmp_path / "pets", dest, wrap)
    else:
        _tar(tmp_path / "pets", dest, "w:gz" if ext == "tar.gz" else "w", wrap)
    shutil.rmtree(tmp_path / "pets")  # nothing is extracted: the archive alone is read
    # Another cache folder: the archive's content equals the folder's, so it would share the decoded cache.
    archived = load_dataset(f"folder:{dest}", LoadOptions(cache_dir=str(tmp_path / "cache2"), storage_size=8))
    assert archived.class_names == folder.class_names
    assert torch.equal(archived.train.images, folder.train.images)
    assert torch.equal(archived.test.labels, folder.test.labels)
    assert not list(tmp_path.glob("pets/**/*.png"))


def test_single_folder_gets_a_seeded_stratified_split(tmp_path):
    root = tmp_path / "flat"
    for label, cls in enumerate(CLASSES):
        for k in range(10):
            _image(root / cls / f"{k}.png", label * 10 + k)
    a = load_dataset(f"folder:{root}", _opts(tmp_path))
    fi._INDEXES.clear()
    b = load_dataset(f"folder:{root}", LoadOptions(cache_dir=str(tmp_path / "other"), storage_size=8))
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert torch.bincount(a.test.labels).tolist() == [2, 2, 2]  # 20% of each class
    seen = _identify(a.train.images) + _identify(a.test.images)
    assert sorted(seen) == list(range(30))  # a disjoint cover of the files
    for split in (a.train, a.test):
        assert [i // 10 for i in _identify(split.images)] == split.labels.tolist()
    # the split is the one stratified_split draws with the recorded seed (independently recomputed here)
    rng = np.random.default_rng(fi.SPLIT_SEED)
    expected_test = sorted(c * 10 + int(k) for c in range(3) for k in rng.permutation(10)[:2])
    assert sorted(_identify(a.test.images)) == expected_test
    index = fi.folder_index(root, "folder:x", str(tmp_path / "cache"))
    assert index.identity()["dataset_split"] == f"stratified test fraction 0.2 seed {fi.SPLIT_SEED}"


def test_non_images_hidden_files_and_loose_images_are_skipped_and_counted(tmp_path, capsys):
    root = tmp_path / "pets"
    write_split_layout(root)
    (root / "README.txt").write_text("about")
    (root / "train" / "cat" / "notes.md").write_text("x")
    (root / "train" / "cat" / ".hidden.png").write_bytes(b"not an image")
    (root / "__MACOSX" / "train").mkdir(parents=True)
    (root / "__MACOSX" / "train" / "._000.png").write_bytes(b"apple double")
    _image(root / "train" / "loose.png", 99)  # an image outside any class folder
    bundle = load_dataset(f"folder:{root}", _opts(tmp_path))
    assert len(bundle.train) == 12 and len(bundle.test) == 6
    err = capsys.readouterr().err
    assert "skipped 5 file(s)" in err and err.count("warning:") == 1, err


def test_varying_sizes_are_resized_once_to_the_storage_size(tmp_path):
    root = tmp_path / "pets"
    write_split_layout(root)
    _image(root / "train" / "cat" / "wide.png", 77, size=(30, 12))
    bundle = load_dataset(f"folder:{root}", _opts(tmp_path, storage_size=16))
    assert bundle.train.images.shape == (13, 3, 16, 16)


def test_identity_follows_the_bytes_not_the_path(tmp_path):
    from livar_bench.config import make_spec

    write_split_layout(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    base = dict(backbone="livar_micro_vit", num_clients=2, cache_dir=str(tmp_path / "cache"))
    ids = {name: make_spec({**base, "dataset": f"folder:{tmp_path / name}"}) for name in ("a", "b")}
    assert ids["a"].run_id == ids["b"].run_id and ids["a"].partition_id == ids["b"].partition_id
    assert ids["a"].dataset == f"folder:{tmp_path / 'a'}"  # the path given is kept (case too)
    # One file's pixels change (same name, same size on disk): another run id, another partition id.
    target = tmp_path / "b" / "train" / "dog" / "001.png"
    before = target.stat().st_size
    Image.new("RGB", (10, 10), (1, 2, 3)).save(target)
    assert target.stat().st_size == before
    changed = make_spec({**base, "dataset": f"folder:{tmp_path / 'b'}"})
    assert changed.run_id != ids["a"].run_id and changed.partition_id != ids["a"].partition_id
    from livar_bench.federation.round1_cache import round1_key
    from livar_bench.methods import parse_method

    fedavg, cpu = parse_method("fedavg"), torch.device("cpu")
    assert round1_key(changed, fedavg, cpu) != round1_key(ids["a"], fedavg, cpu)  # a sweep's shared round 1 too
    # An added non-image file changes nothing.
    (tmp_path / "a" / "notes.txt").write_text("x")
    assert make_spec({**base, "dataset": f"folder:{tmp_path / 'a'}"}).run_id == ids["a"].run_id


def test_decoded_once_and_scanned_once(tmp_path, monkeypatch):
    import livar_bench.data.folder as folder

    write_split_layout(tmp_path / "pets")
    first = load_dataset(f"folder:{tmp_path / 'pets'}", _opts(tmp_path))
    assert len(list((tmp_path / "cache").glob("folder-*-*.pt"))) == 2
    assert len(list((tmp_path / "cache").glob("folder-index-*.json"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("scanned or decoded again")

    monkeypatch.setattr(folder, "decode_entries", refuse)
    monkeypatch.setattr(fi, "build_index", refuse)
    fi._INDEXES.clear()  # as in a new process: the scan comes from the cache folder
    again = load_dataset(f"folder:{tmp_path / 'pets'}", _opts(tmp_path))
    assert torch.equal(again.train.images, first.train.images)


def test_a_truncated_image_is_named_when_decoded(tmp_path):
    root = tmp_path / "pets"
    write_split_layout(root)
    victim = root / "test" / "eel" / "noise.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(victim, quality=95)
    victim.write_bytes(victim.read_bytes()[:3000])  # the header survives (the scan passes), the pixels do not
    index = fi.folder_index(root, "folder:pets", str(tmp_path / "cache"))  # the header is readable
    assert ("test/eel/noise.jpg", 2) in index.test and index.image_size is None
    with pytest.raises(BenchError, match=r"folder:\S+: cannot read image test/eel/noise\.jpg \(OSError"):
        load_dataset(f"folder:{root}", _opts(tmp_path))
    assert not list((tmp_path / "cache").glob("folder-*.pt"))  # nothing half-decoded is cached


@pytest.mark.parametrize("case,match", [
    ("corrupt", r"cannot read image train/dog/000\.png"),
    ("empty-class", r"class folder train/eel holds no images"),
    ("one-class", r"one class folder only \(cat\)"),
    ("missing-test", r"has train/ but no test/"),
    ("missing-train", r"has test/ but no train/"),
    ("test-only-class", r"class 'fox' has a test/fox folder but no train/fox"),
    ("no-classes", r"holds no class folders"),
    ("bad-archive", r"cannot read the archive"),
    ("not-an-archive", r"not a known archive"),
    ("nonexistent", r"does not exist"),
])
def test_bad_folders_are_clear_errors(tmp_path, case, match):
    root = tmp_path / "pets"
    if case == "corrupt":
        write_split_layout(root)
        (root / "train" / "dog" / "000.png").write_bytes(b"\x89PNG garbage")
    elif case == "empty-class":
        write_split_layout(root)
        shutil.rmtree(root / "train" / "eel")
        (root / "train" / "eel").mkdir()
        (root / "train" / "eel" / "readme.txt").write_text("no images here")
    elif case == "one-class":
        _image(root / "cat" / "0.png", 0)
        _image(root / "cat" / "1.png", 1)
    elif case == "missing-test":
        write_split_layout(root)
        shutil.rmtree(root / "test")
    elif case == "missing-train":
        write_split_layout(root)
        shutil.rmtree(root / "train")
    elif case == "test-only-class":
        write_split_layout(root)
        _image(root / "test" / "fox" / "0.png", 5)
    elif case == "no-classes":
        _image(root / "0.png", 0)
    elif case == "bad-archive":
        root = tmp_path / "pets.tar.gz"
        root.write_bytes(b"\x1f\x8b\x08 this is not really gzip")
    elif case == "not-an-archive":
        root = tmp_path / "pets.rar"
        root.write_bytes(b"Rar!")
    with pytest.raises((BenchError, DataNotFoundError), match=match) as info:
        load_dataset(f"folder:{root}", _opts(tmp_path))
    assert "\n" not in str(info.value)
