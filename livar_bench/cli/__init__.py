"""The ``livar-bench`` command line. Commands are thin: parse, validate, call the library."""

from __future__ import annotations

import sys

import typer

from livar_bench.errors import BenchError

app = typer.Typer(
    name="livar-bench",
    help="Benchmark federated aggregation of LoRA-tuned ViTs: LIVAR, FedAvg, FedProx, CCVR, TIES, task arithmetic.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts show method specs like ties[density=0.3] literally
)

from livar_bench.cli import bench as _bench  # noqa: E402,F401
from livar_bench.cli import bench_server as _bench_server  # noqa: E402,F401
from livar_bench.cli import compare as _compare  # noqa: E402,F401
from livar_bench.cli import demo as _demo  # noqa: E402,F401
from livar_bench.cli import explain as _explain  # noqa: E402,F401
from livar_bench.cli import ls as _ls  # noqa: E402,F401  (registers commands)
from livar_bench.cli import plot as _plot  # noqa: E402,F401
from livar_bench.cli import run as _run  # noqa: E402,F401
from livar_bench.cli import status as _status  # noqa: E402,F401
from livar_bench.cli import sweep as _sweep  # noqa: E402,F401
from livar_bench.cli import table as _table  # noqa: E402,F401
from livar_bench.cli import tune as _tune  # noqa: E402,F401


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    from rich.text import Text

    from livar_bench.cli.ui import console

    try:
        app()
    except BenchError as err:
        console.print(Text("error: ", style="bold red") + Text(str(err)), highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as err:  # an output folder that cannot be created or written, a full disk, ...
        where = f": {err.filename}" if err.filename else ""
        console.print(Text("error: ", style="bold red") + Text(f"{err.strerror or err}{where}"), highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted; finished runs are kept, and rerunning resumes the rest", highlight=False)
        sys.exit(130)
