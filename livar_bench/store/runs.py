"""``RunStore``: the runs of a results folder (finished, partial, damaged), their verification and index.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from livar_bench.errors import warn
from livar_bench.store.atomic import DamagedFile, _sha256, set_aside, write_json
from livar_bench.store.locks import FileLock, LeaseLock, lock_mode
from livar_bench.store.tensors import load_pickle, load_tensors, save_pickle

if TYPE_CHECKING:
    import pandas as pd

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
        self._held: dict[str, FileLock | LeaseLock] = {}  # run id -> the lock this store holds now

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
        if held:
            self._held[run_id] = lock
        try:
            yield held
        finally:
            if held:
                self._held.pop(run_id, None)
                lock.release()
                try:
                    locks.rmdir()  # only when no other run is locked
                except OSError:
                    pass

    def holds(self, run_id: str) -> bool:
        """Whether this store still holds the run's lock (in lease mode: renews it, and is False once another
        process has taken the run over because this one stalled past its lease)."""
        lock = self._held.get(run_id)
        return lock is not None and lock.still_held()

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
