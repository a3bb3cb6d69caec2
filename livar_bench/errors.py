"""User-facing errors.

Every error a user can cause (bad option, missing file, diverged training) is a ``BenchError``: the CLI
prints its message on one line and exits non-zero, without a traceback. Messages say what to do next.
"""


class BenchError(Exception):
    """An error caused by input or environment, reported to the user without a traceback."""


class DataNotFoundError(BenchError):
    """A dataset's files are not where they were looked for."""


class WeightsError(BenchError):
    """Backbone weights could not be obtained or loaded."""


class DivergedError(BenchError):
    """Training produced a non-finite loss."""


class DiskFullError(BenchError):
    """A write failed because the disk (or its inodes, or a quota) is full."""


_WARNED: set[str] = set()


def warn(message: str) -> None:
    """Print one ``warning:`` line on stderr (each distinct message once per process)."""
    import sys

    if message in _WARNED:
        return
    _WARNED.add(message)
    print(f"warning: {message}", file=sys.stderr, flush=True)
