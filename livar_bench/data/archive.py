"""Read the files of a folder or an archive (.tar, .tar.gz/.tgz/.tar.bz2/.tar.xz, .zip) the same way.

Archives are read in place, never extracted: a tar is streamed member by member (a compressed tar has
no index, so each read is one pass over it), a zip is read through its central directory. Every source
yields ``(relative posix path, is a directory, load)`` where ``load()`` returns the file's bytes;
``load`` is only given for files the caller wants; for an archive the bytes are read before the walk
moves on (a tar stream cannot go back; they cost memory until the caller drops them), for a folder when
``load`` is called (so a thread pool can read files in parallel). Links, devices and members with
absolute or ``..`` paths are reported as skipped files: nothing is written, so nothing can escape.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from livar_bench.errors import BenchError, DataNotFoundError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)
ARCHIVE_SUFFIXES = TAR_SUFFIXES + ZIP_SUFFIXES

Load = Callable[[], bytes]
Want = Callable[[str], bool]
Item = tuple[str, bool, "Load | None"]  # (relative path, is a directory, load or None)


def _clean(name: str) -> str | None:
    """A member name as a relative posix path, or None when it is absolute or climbs out (``..``)."""
    path = PurePosixPath(name.replace("\\", "/"))
    parts = [p for p in path.parts if p not in ("", ".")]
    if path.is_absolute() or ".." in parts or not parts:
        return None
    return "/".join(parts)


def _keep(data: bytes) -> Load:
    return lambda: data


@dataclass(frozen=True)
class Source:
    """A folder or an archive of files. ``kind`` is ``folder``, ``tar`` or ``zip``."""

    path: Path
    kind: str
    label: str = ""  # how messages name the dataset, e.g. folder:data/pets

    def stat_key(self) -> list:
        """What decides whether a remembered scan still describes this source: for an archive its size and
        modification time, for a folder every file's relative path, size and modification time."""
        if self.kind != "folder":
            st = self.path.stat()
            return [str(self.path.resolve()), st.st_size, st.st_mtime_ns]
        rows: list = [str(self.path.resolve())]
        skip = len(str(self.path)) + 1
        for dirpath, dirnames, _ in os.walk(self.path, followlinks=True):
            dirnames.sort()
            with os.scandir(dirpath) as entries:
                for entry in entries:
                    if entry.is_file():
                        try:
                            st = entry.stat()
                            rows.append([entry.path[skip:], st.st_size, st.st_mtime_ns])
                        except OSError:
                            rows.append([entry.path[skip:], -1, -1])  # unreadable: the scan names it
        return [rows[0], *sorted(rows[1:], key=lambda r: r[0])]

    def walk(self, want: Want, skipped: list[str] | None = None) -> Iterator[Item]:
        """Every entry, in the source's own order; ``load`` is set for the files ``want`` accepts.

        Args:
            want: which files (by relative path) to make readable.
            skipped: receives the names of members that are not plain files or folders (links, devices,
                unsafe paths).

        Raises:
            BenchError: the archive cannot be read (truncated, not an archive, encrypted).
        """
        skipped = [] if skipped is None else skipped
        try:
            if self.kind == "folder":
                yield from self._walk_folder(want)
            elif self.kind == "tar":
                yield from self._walk_tar(want, skipped)
            else:
                yield from self._walk_zip(want, skipped)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError) as err:
            raise self.unreadable(err) from None
        except OSError as err:  # a gzip/bz2/lzma stream error, or the file vanished
            if self.kind == "folder":
                raise
            raise self.unreadable(err) from None

    def unreadable(self, err: BaseException) -> BenchError:
        why = str(err).splitlines()[0] if str(err) else ""
        return BenchError(f"{self.label or self.path}: cannot read the archive {self.path} ({type(err).__name__}{': ' + why if why else ''}); "
                          f"check the file (download it again) or extract it and give the folder")

    def _walk_folder(self, want: Want) -> Iterator[Item]:
        for dirpath, dirnames, filenames in os.walk(self.path, followlinks=True):
            dirnames.sort()
            base = Path(dirpath)
            for name in dirnames:
                yield (base / name).relative_to(self.path).as_posix(), True, None
            for name in sorted(filenames):
                full = base / name
                rel = full.relative_to(self.path).as_posix()
                yield rel, False, (full.read_bytes if want(rel) else None)

    def _walk_tar(self, want: Want, skipped: list[str]) -> Iterator[Item]:
        with tarfile.open(self.path, "r|*") as tar:  # a stream: one pass, no index held in memory
            for member in tar:
                rel = _clean(member.name)
                if rel is None or not (member.isfile() or member.isdir()):
                    skipped.append(member.name)
                    continue
                if member.isdir():
                    yield rel, True, None
                    continue
                load = None
                if want(rel):
                    handle = tar.extractfile(member)
                    load = _keep(handle.read() if handle is not None else b"")
                yield rel, False, load

    def _walk_zip(self, want: Want, skipped: list[str]) -> Iterator[Item]:
        with zipfile.ZipFile(self.path) as archive:
            for info in archive.infolist():
                rel = _clean(info.filename)
                mode = (info.external_attr >> 16) & 0o170000
                if rel is None or mode not in (0, 0o100000, 0o040000):  # 0: no unix mode recorded
                    skipped.append(info.filename)
                    continue
                if info.is_dir():
                    yield rel, True, None
                    continue
                yield rel, False, (_keep(archive.read(info)) if want(rel) else None)


def open_source(path: Path, label: str) -> Source:
    """The folder or archive at ``path``.

    Raises:
        DataNotFoundError: nothing is there.
        BenchError: a file that is not an archive of a known kind.
    """
    if not path.exists():
        raise DataNotFoundError(f"{label}: {path} does not exist; give a folder of class folders (or of train/ and "
                                f"test/ folders of class folders), or a {', '.join(ARCHIVE_SUFFIXES)} file of one")
    if path.is_dir():
        return Source(path, "folder", label)
    name = path.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return Source(path, "tar", label)
    if name.endswith(ZIP_SUFFIXES):
        return Source(path, "zip", label)
    raise BenchError(f"{label}: {path} is a file but not a known archive ({', '.join(ARCHIVE_SUFFIXES)}); give a "
                     f"folder or an archive with one of those suffixes")
