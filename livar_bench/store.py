"""The results folder: one directory per finished run, written atomically, safe for parallel sweeps.

    <out>/runs/<run_id>/spec.json        the fully resolved RunSpec
    <out>/runs/<run_id>/env.json         versions, device, git sha, host, threads
    <out>/runs/<run_id>/partition.json   per-client class counts, sizes, heterogeneity, fingerprint
    <out>/runs/<run_id>/metrics.csv      tidy rows: one per (round, split, metric)
    <out>/runs/<run_id>/DONE             completion marker (written last): the SHA-256 of each file above
    <out>/partitions/<partition_id>.json per-client indices (and validation carve) of one partition,
                                         written once, reused and verified by every run that shares it

A run in progress lives in ``<out>/runs/.partial/<run_id>/`` with a per-round checkpoint, and is moved
into place with one ``os.replace`` when it completes, so a reader never sees half a run.

Every file is written to a temporary file next to it (``.<name>.tmp.<host>.<pid>``), flushed to disk
and renamed into place; a failed write removes its temporary file, and temporary files of dead
processes are swept at the start of a sweep (``sweep_temp_files``). A full disk (or no free inodes, or a
quota) becomes one ``DiskFullError`` line naming the folder. Files read back are verified: tensor files
(checkpoints, the round-1 cache) carry a SHA-256 of their payload in a header, finished runs are checked
against the digests in their DONE marker, JSON records against their expected shape. A damaged cache
or checkpoint is set aside as ``<name>.damaged`` with one warning line and recomputed; a damaged
finished run is reported (``status``, ``table``) and rerun by the next sweep.

Locks (``RunStore.lock``), one file per run under ``<out>/runs/.locks/``:

- ``flock`` (default): an OS advisory lock (``fcntl.flock``) on the open lock file. The kernel drops it
  when its process dies, however it dies, so a stale lock cannot exist; the file's content (pid@host)
  is informational only, so an empty, garbage or reused-pid file is simply taken.
- ``lease`` (``LIVAR_BENCH_LOCKS=lease``, for one results folder shared by several hosts on a
  filesystem whose locks are not shared between hosts): the file holds an owner token and an expiry
  time, created atomically (``os.link``), renewed by a heartbeat thread every quarter of the lease
  (``LIVAR_BENCH_LEASE_S``, default 600 s), and taken over once expired (or unreadable).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livar_bench.errors import BenchError, DiskFullError, warn
from livar_bench.resources import available_cpus

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


@contextmanager
def nothing_left_on_failure(out: str | Path, run_ids: list[str]) -> Iterator[None]:
    """On a failure (any exception) that left none of ``run_ids`` finished or resumable, remove what the
    command created: new partition files, new sweep records and the folders it made that are now empty.
    A failed command then leaves the results folder as it found it."""
    root = Path(out).expanduser()
    folders = [root / "partitions", root / "sweeps"]

    def files() -> set[Path]:
        return {p for folder in folders if folder.is_dir() for p in folder.iterdir()}

    created_dirs = [d for d in (root, root / "runs", *folders) if not d.exists()]
    before = files()
    try:
        yield
    except BaseException:
        store = RunStore(root)
        if not any(store.run_dir(r).is_dir() or store.partial_dir(r).is_dir() for r in run_ids):
            for path in files() - before:
                path.unlink(missing_ok=True)
            for folder in sorted(created_dirs, key=lambda d: len(d.parts), reverse=True):
                try:
                    folder.rmdir()
                except OSError:
                    pass
        raise


# --- verified tensor files (checkpoints, round-1 cache) ----------------------------------------------

MAGIC = b"livar-bench tensors v1 sha256="
_HEADER = len(MAGIC) + 64 + 1


class DamagedFile(Exception):
    """A state file that cannot be trusted (truncated, garbage, wrong digest, wrong shape)."""


class _HashingSink:
    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.hash.update(data)
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()


class _Window(io.RawIOBase):
    """A read-only view of a file from ``offset`` on (torch.load reads the payload after the header)."""

    def __init__(self, fh: Any, offset: int) -> None:
        self.fh, self.offset = fh, offset
        fh.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self.fh.readinto(buffer)

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.fh.seek(pos + self.offset if whence == 0 else pos, whence) - self.offset

    def tell(self) -> int:
        return self.fh.tell() - self.offset


def save_tensors(path: Path, payload: Any) -> None:
    """``torch.save`` the payload atomically behind a header holding its SHA-256."""
    import torch

    with atomic_file(path) as sink:
        sink.write(MAGIC + b"0" * 64 + b"\n")
        hashing = _HashingSink(sink)
        torch.save(payload, hashing)
        sink.flush()
        sink.fh.seek(len(MAGIC))
        sink.write(hashing.hash.hexdigest().encode())


def load_tensors(path: Path, map_location: Any = "cpu") -> Any:
    """Read a file written by ``save_tensors`` after checking its digest.

    Raises:
        DamagedFile: truncated, garbage, or a payload whose digest does not match.
        OSError: the file cannot be read.
    """
    import torch

    with open(path, "rb") as fh:
        head = fh.read(_HEADER)
        if not head.startswith(MAGIC) or len(head) < _HEADER:
            raise DamagedFile("no livar-bench header: truncated or not written by livar-bench")
        expected = head[len(MAGIC):-1].decode("ascii", "replace")
        digest = hashlib.sha256()
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
        if digest.hexdigest() != expected:
            raise DamagedFile("checksum mismatch: truncated or overwritten")
        try:
            return torch.load(io.BufferedReader(_Window(fh, _HEADER)), map_location=map_location,
                              weights_only=False)  # our own file, digest checked
        except Exception as err:  # noqa: BLE001 (any unpickling failure means the same: damaged)
            raise DamagedFile(f"unreadable ({type(err).__name__})") from None


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


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict | None:
    """The checkpoint dict at ``path``, or None when there is none or it is damaged.

    A damaged checkpoint (truncated, garbage, wrong digest, not a dict) is set aside with one warning
    line, and the run restarts from round 0.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        try:
            payload = load_tensors(path, map_location)
        except DamagedFile as err:
            payload = _legacy_checkpoint(path, map_location, err)
        if not isinstance(payload, dict):
            raise DamagedFile(f"holds a {type(payload).__name__}, not a checkpoint")
    except DamagedFile as err:
        set_aside(path, str(err), "the run restarts from round 0")
        return None
    return payload


def _legacy_checkpoint(path: Path, map_location: Any, err: DamagedFile) -> Any:
    """A checkpoint written before checkpoints carried a digest (a plain torch file), if it loads."""
    import torch

    with open(path, "rb") as fh:
        if fh.read(len(MAGIC)) == MAGIC:
            raise err  # ours, and damaged
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception:  # noqa: BLE001 (truncated, garbage: damaged)
        raise err from None


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write a checkpoint atomically with its digest (see ``load_checkpoint``)."""
    save_tensors(Path(path), payload)


def read_json(path: Path, check: Callable[[Any], bool] | None = None) -> Any:
    """Parse a JSON record; raises DamagedFile when it is not JSON or fails ``check``."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedFile(f"not valid JSON ({type(err).__name__})") from None
    if check is not None and not check(data):
        raise DamagedFile("not the expected record")
    return data


PICKLE_MAGIC = b"livar-bench pickle v1 sha256="


def save_pickle(path: Path, obj: Any) -> None:
    """Pickle ``obj`` atomically behind a header holding the payload's SHA-256 (our own index files)."""
    import pickle

    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, PICKLE_MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)


def load_pickle(path: Path) -> Any:
    """Read a ``save_pickle`` file; raises DamagedFile when its digest or content is wrong."""
    import pickle

    raw = Path(path).read_bytes()
    head = len(PICKLE_MAGIC) + 65
    if not raw.startswith(PICKLE_MAGIC) or len(raw) < head:
        raise DamagedFile("no livar-bench header")
    if hashlib.sha256(raw[head:]).hexdigest().encode() != raw[len(PICKLE_MAGIC):head - 1]:
        raise DamagedFile("checksum mismatch")
    try:
        return pickle.loads(raw[head:])  # noqa: S301 (our own file, digest checked)
    except Exception as err:  # noqa: BLE001
        raise DamagedFile(f"unreadable ({type(err).__name__})") from None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- locks -------------------------------------------------------------------------------------------

def lock_mode() -> str:
    mode = os.environ.get("LIVAR_BENCH_LOCKS", "flock").strip().lower() or "flock"
    if mode not in ("flock", "lease"):
        raise BenchError(f"LIVAR_BENCH_LOCKS={mode!r}: use flock (one host) or lease (several hosts)")
    return mode


def lease_seconds() -> float:
    text = os.environ.get("LIVAR_BENCH_LEASE_S", "600")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise BenchError(f"LIVAR_BENCH_LEASE_S={text!r}: give a positive number of seconds, e.g. 600")
    return value


class FileLock:
    """An ``fcntl.flock`` lock on ``path``: released by the kernel when the holder's process ends."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self) -> bool:
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder was removed meanwhile (an idle .locks is cleaned up)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError as err:
                os.close(fd)
                raise BenchError(f"cannot lock files under {self.path.parent} ({err.strerror}); on a shared "
                                 f"filesystem without locks set LIVAR_BENCH_LOCKS=lease") from None
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if not current:  # its holder released (and removed) it between our open and our lock
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}@{HOST}\n".encode(), 0)
            self.fd = fd
            return True
        return False

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding it: a waiter then sees a new inode
            os.close(self.fd)
            self.fd = None

    @staticmethod
    def held_by_other(path: Path) -> bool:
        """Whether some process holds the lock at ``path`` now."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
        return False


class LeaseLock:
    """A lease on ``path`` for folders shared between hosts: owner token + expiry, heartbeat, takeover.

    ``clock`` (seconds, default ``time.time``) is injectable so tests can move time. The hosts' clocks
    must agree to well within the lease (NTP does that); a holder that cannot renew for a whole lease
    (suspended, partitioned) loses it, and the next process takes the run over. Two processes then train
    the same run, which costs time only: the first to finish is kept (``RunStore.commit``).
    """

    def __init__(self, path: Path, ttl: float | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.ttl = lease_seconds() if ttl is None else ttl
        self.clock = clock
        self.token = uuid.uuid4().hex
        self.held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> bytes:
        return json.dumps({"token": self.token, "owner": f"{os.getpid()}@{HOST}",
                           "expires": self.clock() + self.ttl}).encode()

    @staticmethod
    def read(path: Path) -> dict | None:
        """The lease at ``path``, or None when absent, empty or garbage."""
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        ok = isinstance(data, dict) and isinstance(data.get("token"), str) and isinstance(data.get("expires"), (int, float))
        return data if ok else None

    def _create(self) -> bool:
        tmp = temp_path(self.path)
        write_bytes(tmp, self._record())
        try:
            os.link(tmp, self.path)  # atomic and exclusive: no reader ever sees a half-written lease
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._create():
                self.held = True
                return True
            try:
                seen = self.path.read_bytes()
            except FileNotFoundError:
                continue
            lease = self.read(self.path)
            if lease is not None and lease["expires"] > self.clock():
                return False
            # expired, empty or garbage: move it aside (one rename wins), then make sure we moved that one
            aside = self.path.with_name(f"{self.path.name}.stale.{self.token}")
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                continue
            if aside.read_bytes() != seen:  # a fresh lease replaced it meanwhile: put it back, yield
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
                aside.unlink(missing_ok=True)
                return False
            aside.unlink(missing_ok=True)
        return False

    def renew(self) -> bool:
        """Extend the lease; False (and a warning) when another process has taken it over."""
        lease = self.read(self.path)
        if lease is None or lease["token"] != self.token:
            warn(f"the lease {self.path} was taken over by another process (this one stalled for longer than "
                 f"{self.ttl:g} s); both may finish the run, and the first result is kept")
            return False
        write_bytes(self.path, self._record())
        return True

    def start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.ttl / 4):
                if not self.renew():
                    return

        self._thread = threading.Thread(target=beat, name="livar-bench-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.held:
            lease = self.read(self.path)
            if lease is not None and lease["token"] == self.token:
                self.path.unlink(missing_ok=True)
            self.held = False

    @classmethod
    def live(cls, path: Path, clock: Callable[[], float] = time.time) -> bool:
        lease = cls.read(path)
        return lease is not None and lease["expires"] > clock()


# --- the results folder --------------------------------------------------------------------------

RUN_FILES = ("spec.json", "env.json", "partition.json", "metrics.csv")  # digested into DONE


def _signature(folder: Path) -> tuple:
    """(size, mtime) of a finished run's files: a change of any of them triggers a new verification."""
    out = []
    for name in ("DONE", *RUN_FILES):
        try:
            st = os.stat(folder / name)
            out.append((st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


class RunStore:
    """Access to ``<out>/runs``.

    Verifying a finished run hashes its files; the signatures (size, mtime, inode of each file) of the
    runs found intact are kept in ``<out>/cache/verified.pkl`` (``save_index``), so that later commands
    re-verify only runs whose files changed: reading a folder of thousands of runs costs a ``stat`` per
    file, not a read.
    """

    def __init__(self, out: str | Path) -> None:
        self.root = Path(out).expanduser()
        self.runs = self.root / "runs"
        self._verified: dict[str, tuple[tuple, str | None]] = {}
        self._index: dict[str, tuple] | None = None
        self._index_changed = False

    @property
    def index_path(self) -> Path:
        return self.root / "cache" / "verified.pkl"

    def _saved_index(self) -> dict[str, tuple]:
        if self._index is None:
            self._index = {}
            if self.index_path.is_file():
                try:
                    data = load_pickle(self.index_path)
                    if isinstance(data, dict) and data.get("version") == 1:
                        self._index = dict(data["signatures"])
                except (OSError, DamagedFile, KeyError, TypeError, ValueError) as err:
                    set_aside(self.index_path, str(err), "finished runs are verified again")
        return self._index

    def save_index(self) -> None:
        """Persist the signatures of the runs verified intact (when any changed)."""
        if self._index_changed and self.runs.is_dir():
            current = {r: sig for r, (sig, problem) in self._verified.items() if problem is None}
            save_pickle(self.index_path, {"version": 1, "signatures": {**self._saved_index(), **current}})
            self._index_changed = False

    def signature(self, run_id: str) -> tuple:
        """The signature of a finished run's files (as of its last verification in this process)."""
        known = self._verified.get(run_id)
        return known[0] if known is not None else _signature(self.run_dir(run_id))

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    def partial_dir(self, run_id: str) -> Path:
        return self.runs / ".partial" / run_id

    def has_marker(self, run_id: str) -> bool:
        return (self.run_dir(run_id) / "DONE").is_file()

    def problem(self, run_id: str) -> str | None:
        """Why a finished run cannot be trusted (a file missing or changed since its DONE marker), or None.

        A DONE marker of a version before digests (``ok``) is trusted as it is.
        """
        folder = self.run_dir(run_id)
        signature = _signature(folder)
        cached = self._verified.get(run_id)
        if cached is not None and cached[0] == signature:
            return cached[1]
        saved = self._saved_index()
        problem = None if saved.get(run_id) == signature else self._check(folder)
        self._verified[run_id] = (signature, problem)
        if (problem is None) != (saved.get(run_id) == signature):
            self._index_changed = True
            if problem is not None:
                saved.pop(run_id, None)
        return problem

    @staticmethod
    def _check(folder: Path) -> str | None:
        try:
            raw = (folder / "DONE").read_bytes()
        except OSError:
            return "no DONE marker"
        if raw.strip() == b"ok":
            return None  # written before DONE carried digests
        try:
            marker = json.loads(raw)
            digests = marker["sha256"]
            assert isinstance(digests, dict) and digests
        except (ValueError, KeyError, TypeError, AssertionError):
            return "its DONE marker is damaged"
        for name, digest in sorted(digests.items()):
            try:
                if _sha256(folder / name) != digest:
                    return f"{name} changed after the run finished"
            except OSError:
                return f"{name} is missing"
        return None

    def is_done(self, run_id: str) -> bool:
        """Finished and intact (a damaged finished run counts as not done: the next sweep reruns it)."""
        return self.has_marker(run_id) and self.problem(run_id) is None

    def finished(self) -> tuple[list[str], dict[str, str]]:
        """(intact finished run ids, {damaged run id: problem}); each damaged run warned about once."""
        if not self.runs.is_dir():
            return [], {}
        ids = sorted(e.name for e in os.scandir(self.runs)
                     if not e.name.startswith(".") and os.path.isfile(os.path.join(e.path, "DONE")))
        good, bad = [], {}
        for run_id in ids:
            problem = self.problem(run_id)
            if problem is None:
                good.append(run_id)
            else:
                bad[run_id] = problem
                warn(f"finished run {self.run_dir(run_id)} is damaged ({problem}); it is left out, and the "
                     f"next sweep (or run) with its settings reruns it")
        return good, bad

    def done_ids(self) -> list[str]:
        return self.finished()[0]

    @contextmanager
    def lock(self, run_id: str) -> Iterator[bool]:
        """Yield True if this process holds the run's lock, False if another process does."""
        locks = self.runs / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        path = locks / f"{run_id}.lock"
        lock: FileLock | LeaseLock = LeaseLock(path) if lock_mode() == "lease" else FileLock(path)
        held = lock.acquire()
        if held and isinstance(lock, LeaseLock):
            lock.start_heartbeat()
        try:
            yield held
        finally:
            if held:
                lock.release()
                try:
                    locks.rmdir()  # only when no other run is locked
                except OSError:
                    pass

    def running(self, run_id: str) -> bool:
        path = self.runs / ".locks" / f"{run_id}.lock"
        if lock_mode() == "lease":
            return LeaseLock.live(path)
        return FileLock.held_by_other(path)

    def state(self, run_id: str) -> tuple[str, int | None]:
        """("done" | "damaged" | "running" | "interrupted" | "pending", last completed round or None).

        "running": a process holds the run's lock; "interrupted": a partial run with a checkpoint that
        the next sweep resumes; "damaged": a finished run whose files changed (the next sweep reruns it).
        Nothing is modified (safe while sweeps run).
        """
        if self.has_marker(run_id):
            if self.problem(run_id) is None:
                return "done", None
            return ("running" if self.running(run_id) else "damaged"), None
        checkpoint = self.partial_dir(run_id) / "checkpoint.pt"
        last = None
        if checkpoint.is_file():
            try:
                last = int(load_tensors(checkpoint)["round"])
            except (OSError, DamagedFile, KeyError, TypeError, ValueError):
                last = None
        if self.running(run_id):
            return "running", last
        return ("interrupted", last) if checkpoint.is_file() else ("pending", None)

    def start(self, run_id: str) -> Path:
        """The partial folder for a run (kept if it exists: it may hold a checkpoint to resume from).

        A damaged finished run of the same id is moved to ``runs/.damaged/<run_id>`` first (call with
        the run's lock held).
        """
        final = self.run_dir(run_id)
        if final.is_dir() and not self.is_done(run_id):
            problem = self.problem(run_id) if self.has_marker(run_id) else "no DONE marker"
            aside = self.runs / ".damaged" / run_id
            aside.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(final, aside)
            warn(f"finished run {final} is damaged ({problem}); set aside as {aside} and run again")
        path = self.partial_dir(run_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def discard(self, run_id: str, keep_checkpoint: bool = True) -> bool:
        """Remove a failed run's partial folder unless it holds a checkpoint to resume from.

        Returns True if the folder was removed. A run that failed before its first checkpoint (bad
        settings, missing data, diverged training) then leaves nothing behind in the results folder.
        ``keep_checkpoint=False`` removes it regardless (a forced rerun starts from round 0).
        """
        partial = self.partial_dir(run_id)
        if not partial.is_dir() or (keep_checkpoint and (partial / "checkpoint.pt").is_file()):
            return False
        shutil.rmtree(partial, ignore_errors=True)
        try:
            partial.parent.rmdir()  # .partial itself, when no other run is in progress
        except OSError:
            pass  # not empty: another run's partial folder lives there
        return True

    def commit(self, run_id: str, replace: bool = False) -> Path:
        """Mark the partial run complete (DONE with its files' digests) and move it into place atomically.

        With ``replace`` (a forced rerun) an existing finished run is swapped out only now, so a forced
        rerun that fails leaves the old result in place.
        """
        partial = self.partial_dir(run_id)
        digests = {name: _sha256(partial / name) for name in RUN_FILES if (partial / name).is_file()}
        write_json(partial / "DONE", {"format": 1, "sha256": digests})
        (partial / "checkpoint.pt").unlink(missing_ok=True)
        final = self.run_dir(run_id)
        if final.exists():
            if not replace and self.is_done(run_id):  # finished elsewhere meanwhile; keep the first
                shutil.rmtree(partial)
                self._tidy_partial()
                return final
            old = self.runs / ".partial" / f"{run_id}.old{os.getpid()}"
            os.replace(final, old)
            os.replace(partial, final)
            shutil.rmtree(old, ignore_errors=True)
            self._tidy_partial()
            return final
        os.replace(partial, final)
        self._tidy_partial()
        return final

    def _tidy_partial(self) -> None:
        try:
            (self.runs / ".partial").rmdir()
        except OSError:
            pass

    def metrics(self, run_id: str) -> pd.DataFrame:
        import pandas as pd

        return pd.read_csv(self.run_dir(run_id) / "metrics.csv")


def environment(device: str) -> dict[str, Any]:
    """Versions, device and git sha recorded with every run."""
    import peft
    import timm
    import torch

    import livar_bench

    info: dict[str, Any] = {
        "livar_bench": livar_bench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "peft": peft.__version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or "cpu",
        "git_sha": _git_sha(),
        "cpus_available": available_cpus(),
        "torch_threads": torch.get_num_threads(),
    }
    return info


def _git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
