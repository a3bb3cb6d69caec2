"""The results folder: one directory per finished run, written atomically, safe for parallel sweeps.

Modules: ``atomic`` (atomic writes, full disks, temporary files, ``DamagedFile``), ``tensors``
(digest-checked tensor and pickle files, checkpoints), ``locks`` (flock and lease run locks), ``runs``
(``RunStore``: finished/partial/damaged runs and the verification index), ``envinfo`` (the environment record).

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

from livar_bench.store.atomic import (
    HOST,
    TEMP_TAG,
    DamagedFile,
    atomic_file,
    disk_full,
    read_json,
    set_aside,
    sweep_temp_files,
    sweep_temp_folders,
    temp_path,
    write_bytes,
    write_csv,
    write_json,
)
from livar_bench.store.envinfo import environment
from livar_bench.store.locks import FileLock, LeaseLock, LeaseLost, lease_seconds, lock_mode
from livar_bench.store.runs import RUN_FILES, RunStore, nothing_left_on_failure
from livar_bench.store.tensors import (
    load_checkpoint,
    load_pickle,
    load_tensors,
    save_checkpoint,
    save_pickle,
    save_tensors,
)

__all__ = [
    "HOST", "RUN_FILES", "TEMP_TAG", "DamagedFile", "FileLock", "LeaseLock", "LeaseLost", "RunStore", "atomic_file", "disk_full",
    "environment", "lease_seconds", "load_checkpoint", "load_pickle", "load_tensors", "lock_mode",
    "nothing_left_on_failure", "read_json", "save_checkpoint", "save_pickle", "save_tensors", "set_aside",
    "sweep_temp_files", "sweep_temp_folders", "temp_path", "write_bytes", "write_csv", "write_json",
]
