"""What every executor shares (local, Ray, Slurm): the event type, the sweep's result, the key under which
runs share a loaded dataset, the signals a shared round 1 collects, and the release of round-1 files.

A module of its own so that ``slurm.py`` and ``executors.py`` (which picks among the executors) need not
import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livar_bench.config import RunSpec
from livar_bench.federation import RunOutcome

Event = Callable[..., None]


def quiet(*args: Any, **kwargs: Any) -> None:
    """Default event handler: ignore everything."""


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did: outcomes of the runs that finished and the runs that failed."""

    outcomes: tuple[RunOutcome, ...]
    failures: tuple[tuple[str, str], ...]  # (run_id, message)
    seconds: float

    @property
    def trained(self) -> int:
        """Runs that trained at least one round in this call."""
        return sum(1 for o in self.outcomes if not o.skipped)

    @property
    def already_done(self) -> int:
        """Runs that were finished before this call (skipped with their stored results)."""
        return sum(1 for o in self.outcomes if o.skipped and o.final)

    @property
    def locked(self) -> list[str]:
        """Runs skipped because another process held their lock (not finished by this call)."""
        return [o.run_id for o in self.outcomes if o.skipped and not o.final]


def bundle_key(spec: RunSpec) -> tuple:
    """Runs with equal keys can share one loaded dataset (a sweep's specs come grouped by it)."""
    return (spec.dataset, spec.data_root, spec.cache_dir, spec.download, spec.image_size or 224,
            spec.max_train_samples, spec.max_test_samples)


class Round1Files:
    """Deletes a cell's shared round-1 file once the sweep has passed the cell's last run.

    The file holds every client's update with the union of the sweep's signals (with CCVR in the sweep,
    per-class covariances: gigabytes per cell for ViT-B on 100+ classes), so it is not kept for longer
    than its cell needs. An interrupted sweep leaves it for the rerun.
    """

    def __init__(self, out: str | Path, specs: list[RunSpec]) -> None:
        from livar_bench.device import resolve_device
        from livar_bench.federation.round1_cache import Round1Cache

        self.last: dict[Path, int] = {}
        for index, spec in enumerate(specs):
            path = Round1Cache.for_run(out, spec, spec.method_spec.build(), resolve_device(spec.device)).path
            self.last[path] = index

    def release_before(self, index: int) -> None:
        """Remove the files whose last user comes before ``index``."""
        for path, last in list(self.last.items()):
            if last < index:
                path.unlink(missing_ok=True)
                del self.last[path]
                for folder in (path.parent, path.parent.parent):  # cache/round1, cache: no empty folders left
                    try:
                        folder.rmdir()
                    except OSError:
                        break


def sweep_signals(specs: list[RunSpec]) -> frozenset:
    """Union of the client signals the sweep's methods need: what a shared round 1 collects, so that
    every method of a cell can reuse it (federation/round1_cache.py)."""
    needed: set = set()
    for spec in specs:
        needed |= spec.method_spec.build().requires
    return frozenset(needed)
