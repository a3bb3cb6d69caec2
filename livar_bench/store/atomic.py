"""Atomic files: every write goes to a temporary file next to its target, is flushed and renamed into place.

A failed write removes its temporary file; temporary files of dead processes are swept at the start of a
sweep (``sweep_temp_files``). A full disk (or no free inodes, or a quota) becomes one ``DiskFullError``
line naming the folder. ``DamagedFile`` is what every reader here raises for a file it cannot trust, and
``set_aside`` moves such a file out of the way with one warning.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livar_bench.errors import DiskFullError, warn

if TYPE_CHECKING:
    import pandas as pd


HOST = socket.gethostname()
TEMP_TAG = ".tmp."
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
# Flush every file to the disk before it replaces the old one (a power cut then leaves the old or the new
# file, never an empty one); LIVAR_BENCH_FSYNC=0 skips it (tests, benchmarks: a crash of the process
# alone never needs it).
_FSYNC = os.environ.get("LIVAR_BENCH_FSYNC", "1").strip() != "0"


# --- atomic writes, full disks, temporary files -----------------------------------------------------

def temp_path(path: Path) -> Path:
    """The temporary file a write of ``path`` goes through (hidden, named after host and pid)."""
    return path.with_name(f".{path.name}{TEMP_TAG}{HOST}.{os.getpid()}")


def disk_full(err: OSError, path: Path) -> DiskFullError:
    """The one-line error for a write of ``path`` that failed because its disk is full."""
    what = "disk quota exceeded" if err.errno == errno.EDQUOT else "no space (or no free inodes) left"
    return DiskFullError(
        f"{what} on the disk holding {path.parent}; free some space there and rerun the same command: "
        f"finished runs are kept and the rest resumes from its last saved round"
    )


def _open_temp(path: Path) -> Any:
    """Open a temporary file for writing (the single place files are created; tests inject faults here)."""
    return open(path, "wb")  # noqa: SIM115 (closed by atomic_file)


class _Sink:
    """A binary file that remembers the OSError of a failed write (torch.save hides it in a RuntimeError)."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.fh.flush()


@contextmanager
def atomic_file(path: Path) -> Iterator[_Sink]:
    """Write ``path`` through a temporary file: renamed into place on success, removed on any failure.

    Raises:
        DiskFullError: the disk (or its inodes, or a quota) is full.
    """
    path = Path(path)
    tmp = temp_path(path)
    sink: _Sink | None = None
    try:
        fh = _open_temp(tmp)
        with fh:
            sink = _Sink(fh)
            yield sink
            fh.flush()
            if _FSYNC:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        cause = err if isinstance(err, OSError) else (sink.error if sink is not None else None)
        if cause is not None and cause.errno in _FULL:
            raise disk_full(cause, path) from None
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_file(path) as fh:
        fh.write(data)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    write_bytes(path, json.dumps(data, indent=2, sort_keys=True, default=str).encode())


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """Write a CSV atomically."""
    write_bytes(path, frame.to_csv(index=False).encode())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_temp_files(root: str | Path, extra: tuple[Path, ...] = ()) -> list[Path]:
    """Remove temporary files that dead processes of this host left under ``root`` (and ``extra`` folders).

    A temporary file of another host is removed once it is a day old (its process cannot be judged).
    Returns the removed paths.
    """
    root = Path(root)
    folders = [root / "runs", root / "runs" / ".locks", root / "partitions", root / "sweeps",
               root / "cache" / "round1", root / "tables", *extra]
    partial = root / "runs" / ".partial"
    if partial.is_dir():
        folders += [partial, *(p for p in partial.iterdir() if p.is_dir())]
    return sweep_temp_folders(folders)


def sweep_temp_folders(folders: list[Path]) -> list[Path]:
    """``sweep_temp_files`` for a list of folders (not recursive)."""
    removed = []
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if TEMP_TAG not in entry.name or not entry.is_file(follow_symlinks=False):
                continue
            host, _, pid = entry.name.rpartition(TEMP_TAG)[2].rpartition(".")
            try:
                stale = (not _pid_alive(int(pid))) if host == HOST else time.time() - entry.stat().st_mtime > 86400
            except (ValueError, OSError):
                continue
            if stale:
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    return removed


class DamagedFile(Exception):
    """A state file that cannot be trusted (truncated, garbage, wrong digest, wrong shape)."""


def set_aside(path: Path, reason: str, then: str) -> Path:
    """Rename a damaged file or folder to ``<name>.damaged`` (replacing an older one) and warn once."""
    dest = path.with_name(f"{path.name}.damaged")
    if dest.is_dir():
        shutil.rmtree(dest, ignore_errors=True)
    try:
        os.replace(path, dest)
    except FileNotFoundError:
        return dest  # another process set it aside first
    warn(f"{path} is damaged ({reason}); set aside as {dest.name}; {then}")
    return dest


def read_json(path: Path, check: Callable[[Any], bool] | None = None) -> Any:
    """Parse a JSON record; raises DamagedFile when it is not JSON or fails ``check``."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedFile(f"not valid JSON ({type(err).__name__})") from None
    if check is not None and not check(data):
        raise DamagedFile("not the expected record")
    return data


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
