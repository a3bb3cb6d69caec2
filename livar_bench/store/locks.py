"""Run locks, one file per run under ``<out>/runs/.locks/``.

- ``flock`` (default): an OS advisory lock (``fcntl.flock``) on the open lock file. The kernel drops it
  when its process dies, however it dies, so a stale lock cannot exist; the file's content (pid@host)
  is informational only, so an empty, garbage or reused-pid file is simply taken.
- ``lease`` (``LIVAR_BENCH_LOCKS=lease``, for one results folder shared by several hosts on a
  filesystem whose locks are not shared between hosts): the file holds an owner token and an expiry
  time, created atomically (``os.link``), renewed by a heartbeat thread every quarter of the lease
  (``LIVAR_BENCH_LEASE_S``, default 600 s), and taken over once expired (or unreadable).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from livar_bench.errors import BenchError
from livar_bench.store.atomic import HOST, temp_path, write_bytes


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


class LeaseLost(Exception):  # noqa: N818 (an event the round loop handles, not a user error)
    """This process's lease on a run was taken over by another process (it stalled past its lease)."""


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

    def still_held(self) -> bool:
        """True while held: the kernel keeps an flock lock as long as this process holds the descriptor."""
        return self.fd is not None

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
    (suspended, partitioned) loses it, and the next process takes the run over. The one that lost it notices
    at the end of its current round (``still_held``, called before every checkpoint and before the run's
    files are written), leaves the run to the new holder with one warning line and goes on with the rest of
    its sweep; should both still finish, the first result is kept (``RunStore.commit``).
    """

    def __init__(self, path: Path, ttl: float | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.ttl = lease_seconds() if ttl is None else ttl
        self.clock = clock
        self.token = uuid.uuid4().hex
        self.held = False
        self.lost = False  # another process took the lease over (seen by renew)
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
        """Extend the lease; False when another process has taken it over (``lost``; the round loop then
        leaves the run to that process with one warning line)."""
        if self.lost:
            return False
        lease = self.read(self.path)
        if lease is None or lease["token"] != self.token:
            self.lost = True
            return False
        write_bytes(self.path, self._record())
        return True

    def still_held(self) -> bool:
        """Whether this process still holds the lease, renewing it (a synchronous heartbeat)."""
        return self.held and self.renew()

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
