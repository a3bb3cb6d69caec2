"""The index of an image folder (torchvision's ImageFolder convention), found by one scan of its files.

Layouts (in a folder, or in a .tar/.tar.gz/.zip of one; a single wrapping folder is looked through):

    <root>/train/<class>/**/<image>  and  <root>/test/<class>/**/<image>   (val/ instead of test/ works too)
    <root>/<class>/**/<image>        a seeded, stratified 80/20 split (seed 0), recorded in the run id

Class names are the class folders' names; labels are their indices in sorted order (as torchvision's).
Files whose suffix is not an image suffix, hidden files (``.name``, macOS ``__MACOSX/``) and images outside
any class folder are skipped and counted. Every image used is hashed: the sorted list of (relative path,
SHA-256 of the bytes) is the folder's ``content`` digest, part of every run id that reads it, so a run id
never stands for results computed on other files. The scan is remembered in the cache folder, keyed by
the archive's (or every file's) path, size and modification time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from livar_bench.data.archive import Load, Source, open_source
from livar_bench.data.offline import stratified_split
from livar_bench.digest import json_digest
from livar_bench.errors import BenchError, warn

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
SPLIT_SEED = 0  # the single-folder layout's split: fixed, so that every run and method sees the same one
TEST_FRACTION = 0.2
TEST_NAMES = ("test", "val")  # the held-out split's folder, in order of preference
INDEX_VERSION = 1
CHUNK = 512  # files handed to the thread pool at once (bounds the bytes held from an archive)
T = TypeVar("T")

Entry = tuple[str, int]  # (path inside the source, label)


@dataclass(frozen=True)
class FolderIndex:
    """What one scan found: classes, the entries of each split, the common image size, skipped files."""

    path: str  # where it was scanned (absolute); the entries' paths are relative to it
    classes: tuple[str, ...]
    train: tuple[Entry, ...]
    test: tuple[Entry, ...]
    split: str  # "folders" (train/ and test/) or the seeded rule of the single-folder layout
    content: str  # SHA-256 of the sorted (relative path, SHA-256 of bytes) of every image used
    image_size: int | None  # side of every image when all are square and of one size, else None
    skipped: int
    skipped_examples: tuple[str, ...]

    def identity(self) -> dict[str, str]:
        """What a run id records of the data: the content digest and how the split was made."""
        return {"dataset_content": f"sha256:{self.content}", "dataset_split": self.split}

    def record(self) -> dict[str, Any]:
        """Recorded in each run's spec.json: the identity and the counts."""
        return {**self.identity(), "dataset_train_files": len(self.train), "dataset_test_files": len(self.test),
                "dataset_skipped_files": self.skipped}


def hidden(rel: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.split("/"))


def is_image(rel: str) -> bool:
    return rel.lower().endswith(IMAGE_SUFFIXES) and not hidden(rel)


def pooled(items: Iterable[T], work: Callable[[T], Any]) -> Iterator[Any]:
    """``work`` over ``items`` in a thread pool, in order, ``CHUNK`` items at a time (image decoding and
    file reads release the GIL; an archive's bytes are held for one chunk only)."""
    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        chunk: list[T] = []
        for item in items:
            chunk.append(item)
            if len(chunk) == CHUNK:
                yield from pool.map(work, chunk)
                chunk = []
        yield from pool.map(work, chunk)


def _probe(item: tuple[str, Load]) -> tuple[str, str, tuple[int, int] | None, str | None]:
    """(path, SHA-256, (width, height) or None, problem or None) of one image file, from its header."""
    from PIL import Image

    rel, load = item
    try:
        data = load()
    except OSError as err:
        return rel, "", None, f"{type(err).__name__}: {err.strerror or err}"
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as img:
            return rel, digest, img.size, None
    except Image.UnidentifiedImageError:
        return rel, digest, None, "not an image file Pillow can read"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # a damaged header
        return rel, digest, None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}"


def _unwrap(files: list[str], dirs: set[str]) -> str:
    """The one folder that wraps everything (``x/`` of ``x.zip`` holding ``x/train/...``), or ''."""
    tops = {rel.split("/")[0] for rel in [*files, *dirs]}
    if len(tops) != 1:
        return ""
    top = next(iter(tops))
    if top in ("train", *TEST_NAMES) or top in files or any(rel.count("/") == 1 and is_image(rel) for rel in files):
        return ""  # a split folder, a lone file, or a folder that holds images itself (one class)
    return top + "/"


def _classes(dirs: set[str], base: str) -> list[str]:
    """Names of the folders directly under ``base`` (a prefix ending in '/', or ''); ``dirs`` holds every
    folder, those implied by a file's path included."""
    found = {d[len(base):].split("/")[0] for d in dirs if d.startswith(base) and len(d) > len(base)}
    return sorted(name for name in found if not hidden(name))


@dataclass
class _Scan:
    """What one pass over a source saw: folders (with those implied by paths), files, skipped names, and
    per image file its (SHA-256, size or None, problem or None)."""

    dirs: set[str]
    files: list[str]
    skipped: list[str]
    probes: dict[str, tuple[str, tuple[int, int] | None, str | None]]


def _scan(source: Source) -> _Scan:
    from livar_bench.progress import track

    scan = _Scan(set(), [], [], {})
    listed: set[str] = set()

    def items() -> Iterator[tuple[str, Load]]:
        for rel, is_dir, load in source.walk(is_image, scan.skipped):
            if hidden(rel):
                if not is_dir:
                    scan.skipped.append(rel)
                continue
            if is_dir:
                scan.dirs.add(rel)
                continue
            if rel in listed:  # a tar may hold a name twice: the later member wins, as on extraction
                scan.files.remove(rel)
            scan.files.append(rel)
            listed.add(rel)
            parts = rel.split("/")
            scan.dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
            if load is not None:
                yield rel, load

    for rel, digest, size, problem in track(pooled(items(), _probe), description=f"scanning {source.path.name}"):
        scan.probes[rel] = (digest, size, problem)
    return scan


def _layout(top: set[str], where: str) -> dict[str, str]:
    """Split name -> folder prefix: {"train": "train/", "test": "test/"} or {"train": ""} (one folder)."""
    test_dir = next((name for name in TEST_NAMES if name in top), None)
    if "train" in top and test_dir is None:
        raise BenchError(f"{where} has train/ but no test/ (or val/) folder; add test/<class>/ folders, or put the "
                         f"class folders directly in it for a seeded {TEST_FRACTION:.0%} test split")
    if "train" not in top and test_dir is not None and top <= set(TEST_NAMES):
        raise BenchError(f"{where} has {test_dir}/ but no train/ folder; add train/<class>/ folders")
    return {"train": "train/", "test": f"{test_dir}/"} if "train" in top else {"train": ""}


def _check_classes(classes: list[str], dirs: set[str], bases: dict[str, str], where: str) -> None:
    if not classes:
        raise BenchError(f"{where} holds no class folders; expected <class>/<image> (e.g. cat/001.jpg), or "
                         f"train/<class>/ and test/<class>/")
    if len(classes) == 1:
        raise BenchError(f"{where} has one class folder only ({classes[0]}); a classifier needs at least two")
    if "test" in bases:
        extra = sorted(set(_classes(dirs, bases["test"])) - set(classes))
        if extra:
            test = bases["test"].rstrip("/")
            raise BenchError(f"{where}: class {extra[0]!r} has a {test}/{extra[0]} folder but no train/{extra[0]}; "
                             f"add its training images or remove {test}/{extra[0]}")


def build_index(source: Source, label: str) -> FolderIndex:
    """Scan ``source`` once (see the module docstring).

    Raises:
        BenchError: a corrupt image (named), an empty class folder, a class in test but not in train,
            one class only, a missing split, no class folders, an unreadable archive.
    """
    scan = _scan(source)
    prefix = _unwrap(scan.files, scan.dirs)
    dirs = {d[len(prefix):] for d in scan.dirs if d.startswith(prefix) and d != prefix.rstrip("/")}
    files = [f[len(prefix):] for f in scan.files if f.startswith(prefix)]
    where = label if str(source.path) in label else f"{label} ({source.path})"
    if prefix:
        where += f" (inside its folder {prefix.rstrip('/')})"
    bases = _layout({d for d in dirs if "/" not in d}, where)
    classes = _classes(dirs, bases["train"])
    _check_classes(classes, dirs, bases, where)
    index = {c: i for i, c in enumerate(classes)}
    entries: dict[str, list[tuple[int, str]]] = {name: [] for name in bases}
    for rel in files:
        split = next((n for n, b in bases.items() if rel.startswith(b) and "/" in rel[len(b):]), None)
        cls = rel[len(bases[split]):].split("/")[0] if split else None
        if split is None or cls not in index or not is_image(rel):
            scan.skipped.append(prefix + rel)
        else:
            entries[split].append((index[cls], rel))
    for split, base in bases.items():
        have = {lab for lab, _ in entries[split]}
        for cls in _classes(dirs, base):
            if index[cls] not in have:
                raise BenchError(f"{where}: class folder {base}{cls} holds no images; add images or remove the folder")
    used = sorted(rel for found in entries.values() for _, rel in found)
    probes = {rel: scan.probes[prefix + rel] for rel in used}
    bad = [rel for rel in used if probes[rel][2] is not None]
    if bad:
        raise BenchError(f"{where}: cannot read image {prefix + bad[0]} ({probes[bad[0]][2]}); replace or delete "
                         f"that file" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    listing = json.dumps([[rel, probes[rel][0]] for rel in used])  # paths inside the wrapping folder
    sizes = {probes[rel][1] for rel in used}
    only = next(iter(sizes)) if len(sizes) == 1 else None
    ordered = {split: tuple((prefix + rel, lab) for lab, rel in sorted(found)) for split, found in entries.items()}
    rule = "folders"
    if "test" not in bases:  # one folder: a seeded stratified split of it
        rule = f"stratified test fraction {TEST_FRACTION} seed {SPLIT_SEED}"
        train_ix, test_ix = stratified_split(np.array([lab for _, lab in ordered["train"]]), TEST_FRACTION, SPLIT_SEED)
        ordered = {"train": tuple(ordered["train"][i] for i in train_ix),
                   "test": tuple(ordered["train"][i] for i in test_ix)}
        if not ordered["test"]:
            raise BenchError(f"{where} has too few images for a {TEST_FRACTION:.0%} test split (none drawn); add "
                             f"images (3 or more per class) or give train/ and test/ folders")
    return FolderIndex(str(source.path.resolve()), tuple(classes), ordered["train"], ordered["test"], rule,
                       hashlib.sha256(listing.encode()).hexdigest(), only[0] if only and only[0] == only[1] else None,
                       len(scan.skipped), tuple(sorted(scan.skipped)[:3]))


def _from_json(data: Any) -> FolderIndex | None:
    try:
        fields = {**data, "classes": tuple(data["classes"]), "skipped_examples": tuple(data["skipped_examples"])}
        fields["train"] = tuple((str(r), int(lab)) for r, lab in data["train"])
        fields["test"] = tuple((str(r), int(lab)) for r, lab in data["test"])
        return FolderIndex(**fields)
    except (KeyError, TypeError, ValueError):
        return None


_INDEXES: dict[str, FolderIndex] = {}


def folder_index(path: Path, label: str, cache_dir: str | None) -> FolderIndex:
    """The index of the folder or archive at ``path``, scanned once and then remembered (in this process
    and in ``<cache>/folder-index-<key>.json``) until a file's size or modification time changes. Checking
    that costs one ``stat`` of an archive, or of every file of a folder (about a second per 60,000 files;
    a RunSpec asks once)."""
    from livar_bench.data.cache import default_cache_dir
    from livar_bench.store import DamagedFile, read_json, write_json

    source = open_source(path.expanduser(), label)
    key = json_digest([INDEX_VERSION, source.stat_key()], 16)
    if key in _INDEXES:
        index = _INDEXES[key]
    else:
        memo = (Path(cache_dir) if cache_dir else default_cache_dir()) / f"folder-index-{key}.json"
        index = None
        if memo.is_file():
            try:
                index = _from_json(read_json(memo, lambda d: isinstance(d, dict)))
            except (OSError, DamagedFile):
                index = None  # unreadable memo: scan again
        if index is None:
            index = build_index(source, label)
            try:
                memo.parent.mkdir(parents=True, exist_ok=True)
                write_json(memo, asdict(index))
            except OSError:  # a read-only cache folder: the scan is simply not remembered
                pass
        _INDEXES[key] = index
    if index.skipped:
        warn(f"{label}: skipped {index.skipped} file(s) that are not images in a class folder "
             f"(e.g. {', '.join(index.skipped_examples)})")
    return index
