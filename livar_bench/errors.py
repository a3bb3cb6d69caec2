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
