"""The results folder: one directory per finished run, written atomically, safe for parallel sweeps.

    <out>/runs/<run_id>/spec.json        the fully resolved RunSpec
    <out>/runs/<run_id>/env.json         versions, device, git sha, host
    <out>/runs/<run_id>/partition.json   per-client class counts, sizes, heterogeneity, fingerprint
    <out>/runs/<run_id>/metrics.csv      tidy rows: one per (round, split, metric)
    <out>/runs/<run_id>/DONE             completion marker (written last)
    <out>/partitions/<partition_id>.json per-client indices (and validation carve) of one partition,
                                         written once, reused and verified by every run that shares it

A run in progress lives in ``<out>/runs/.partial/<run_id>/`` with a per-round checkpoint, and is moved
into place with one ``os.replace`` when it completes, so a reader never sees half a run. A lock file
``<out>/runs/.locks/<run_id>.lock`` (created with O_EXCL) keeps two processes off the same run; a lock
whose process is gone (same host) is taken over.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunStore:
    """Access to ``<out>/runs``."""

    def __init__(self, out: str | Path) -> None:
        self.root = Path(out).expanduser()
        self.runs = self.root / "runs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    def partial_dir(self, run_id: str) -> Path:
        return self.runs / ".partial" / run_id

    def is_done(self, run_id: str) -> bool:
        return (self.run_dir(run_id) / "DONE").is_file()

    def done_ids(self) -> list[str]:
        if not self.runs.is_dir():
            return []
        return sorted(p.parent.name for p in self.runs.glob("*/DONE"))

    @contextmanager
    def lock(self, run_id: str) -> Iterator[bool]:
        """Yield True if this process holds the run's lock, False if another live process does."""
        locks = self.runs / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        path = locks / f"{run_id}.lock"
        me = f"{os.getpid()}@{socket.gethostname()}"
        held = self._try_lock(path, me)
        try:
            yield held
        finally:
            if held and path.is_file() and path.read_text().strip() == me:
                path.unlink(missing_ok=True)

    def _try_lock(self, path: Path, me: str) -> bool:
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = path.read_text().strip() if path.is_file() else ""
                pid, _, host = owner.partition("@")
                if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
                    path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                return False
            with os.fdopen(fd, "w") as fh:
                fh.write(me)
            return True
        return False

    def state(self, run_id: str) -> tuple[str, int | None]:
        """("done" | "running" | "interrupted" | "pending", last completed round or None).

        "running": a live process holds the run's lock; "interrupted": a partial run with a checkpoint
        that the next sweep resumes.
        """
        if self.is_done(run_id):
            return "done", None
        checkpoint = self.partial_dir(run_id) / "checkpoint.pt"
        last = None
        if checkpoint.is_file():
            import torch

            try:
                last = int(torch.load(checkpoint, map_location="cpu", weights_only=False)["round"])
            except (OSError, RuntimeError, KeyError, EOFError, ValueError):
                last = None
        lock = self.runs / ".locks" / f"{run_id}.lock"
        if lock.is_file():
            pid, _, host = lock.read_text().strip().partition("@")
            if host != socket.gethostname() or (pid.isdigit() and _pid_alive(int(pid))):
                return "running", last
        return ("interrupted", last) if checkpoint.is_file() else ("pending", None)

    def start(self, run_id: str) -> Path:
        """The partial folder for a run (kept if it exists: it may hold a checkpoint to resume from)."""
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
        """Mark the partial run complete and move it into place atomically.

        With ``replace`` (a forced rerun) an existing finished run is swapped out only now, so a forced
        rerun that fails leaves the old result in place.
        """
        partial = self.partial_dir(run_id)
        (partial / "checkpoint.pt").unlink(missing_ok=True)
        (partial / "DONE").write_text("ok\n")
        final = self.run_dir(run_id)
        if final.exists():
            if not replace:  # finished elsewhere meanwhile; keep the first
                shutil.rmtree(partial)
                return final
            old = self.runs / ".partial" / f"{run_id}.old{os.getpid()}"
            os.replace(final, old)
            os.replace(partial, final)
            shutil.rmtree(old, ignore_errors=True)
            return final
        os.replace(partial, final)
        return final

    def metrics(self, run_id: str) -> pd.DataFrame:
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
    }
    return info


def _git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
