"""Machine resources: the CPU cores this process may use (and the thread count that follows), memory.

Under CPU contention PyTorch's default (one intra-op thread per core of the machine, whatever the
process is allowed to use and however many runs share it) makes threads spin against each other: an
8-run sweep on a loaded 2-core machine took 480 s with the default against 37 s with one thread per
process. ``configure_threads`` sets the intra-op threads to the cores available to this process
(``os.sched_getaffinity``, and a cgroup CPU quota when there is one) divided by the workers sharing
them, and no more than the cores the rest of the machine leaves idle (by the 1-minute load average);
``LIVAR_BENCH_THREADS`` overrides it. The count is recorded in every run's env.json.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from livar_bench.errors import BenchError


def _cgroup_cpus() -> float | None:
    """The cgroup v2 CPU quota in cores (``cpu.max``), or None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def busy_cores() -> float:
    """Cores kept busy by other work: the 1-minute load average (0 when unknown)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def thread_count(workers: int = 1, busy: float | None = None) -> int:
    """Intra-op threads for one of ``workers`` processes sharing this process's cores.

    The cores available to the process, divided among the workers, and capped by the cores the rest
    of the machine leaves idle (``busy``: default the load average), at least 1.
    """
    text = os.environ.get("LIVAR_BENCH_THREADS")
    if text:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise BenchError(f"LIVAR_BENCH_THREADS={text!r}: give a positive whole number of threads")
        return value
    cores = available_cpus()
    share = cores // max(1, workers)
    idle = cores - (busy_cores() if busy is None else busy)
    return max(1, min(share, math.floor(idle + 0.5)))


def configure_threads(workers: int = 1) -> int:
    """Set torch's intra-op threads for one of ``workers`` concurrent runs; returns the count."""
    import torch

    count = thread_count(workers)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def require_memory(needed: float, what: str, fix: str) -> None:
    """Refuse, with the estimate, when ``needed`` bytes exceed the memory available now."""
    available = available_memory()
    if available is not None and needed > available:
        raise BenchError(f"{what} would take about {_gb(needed)}, more than the {_gb(available)} of memory "
                         f"available; {fix}")


def check_image_size(size: int | None, batch_size: int, eval_batch_size: int) -> None:
    """Refuse an input size whose smallest footprint cannot fit in memory, before anything is built.

    Lower bound: one evaluation or training batch of float32 input images, plus a ViT's positional
    embedding at the narrowest width (192) and the largest patch a registered backbone uses (16 px).
    """
    if not size:
        return
    batch = max(batch_size, eval_batch_size) * 3 * size * size * 4
    positions = (size // 16) ** 2 * 192 * 4
    require_memory(batch + positions, f"--image-size {size}: one batch of {max(batch_size, eval_batch_size)} "
                   f"input images and the positional embedding", "use a smaller --image-size (e.g. 224)")


def check_decoded_size(count: int, size: int, what: str) -> None:
    """Refuse decoding ``count`` images at ``size`` px when the uint8 tensor would not fit in memory."""
    require_memory(count * 3 * size * size, f"decoding {count} {what} images at {size}x{size} px",
                   "use a smaller --image-size (images are stored at that size)")


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (MemAvailable, capped by a cgroup limit), or None."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            found.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return min(found) if found else None
