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


def _plain_defaults() -> None:
    """Typer < 0.21 (what flwr pins) escapes the "[default: ...]" it appends for rich markup even when
    markup is off (rich_markup_mode=None above), so help showed "\\[default: ...]". With markup off
    nothing is parsed as markup, so the text needs no escaping."""
    try:
        from typer import rich_utils
    except ImportError:  # typer without rich: nothing is escaped
        return
    if hasattr(rich_utils, "escape_before_html_export"):
        rich_utils.escape_before_html_export = lambda text: text.strip()


_plain_defaults()

from livar_bench.cli import bench as _bench  # noqa: E402,F401
from livar_bench.cli import bench_scale as _bench_scale  # noqa: E402,F401
from livar_bench.cli import bench_server as _bench_server  # noqa: E402,F401
from livar_bench.cli import compare as _compare  # noqa: E402,F401
from livar_bench.cli import demo as _demo  # noqa: E402,F401
from livar_bench.cli import explain as _explain  # noqa: E402,F401
from livar_bench.cli import ls as _ls  # noqa: E402,F401  (registers commands)
from livar_bench.cli import partition as _partition  # noqa: E402,F401
from livar_bench.cli import plot as _plot  # noqa: E402,F401
from livar_bench.cli import report as _report  # noqa: E402,F401
from livar_bench.cli import run as _run  # noqa: E402,F401
from livar_bench.cli import status as _status  # noqa: E402,F401
from livar_bench.cli import sweep as _sweep  # noqa: E402,F401
from livar_bench.cli import table as _table  # noqa: E402,F401
from livar_bench.cli import tune as _tune  # noqa: E402,F401

INTERRUPTED = "interrupted; finished runs are kept, and rerunning the same command resumes the rest"


def _interrupted(exc: BaseException) -> bool:
    """Whether an exit came from Ctrl-C (typer turns KeyboardInterrupt into a silent exit code 130)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def os_error_hint(err: OSError) -> str:
    """``: <path>; <what to do>`` for an OSError that reached the entry point (the file being written,
    not its hidden temporary name)."""
    import errno
    from pathlib import Path

    from livar_bench.store.atomic import TEMP_TAG

    where = ""
    if err.filename:
        path = Path(err.filename)
        if path.name.startswith(".") and TEMP_TAG in path.name:  # a write through atomic_file
            path = path.with_name(path.name[1:path.name.index(TEMP_TAG)])
        where = f": {path}"
    hint = {errno.ENOENT: "check that its folder exists (create it) or choose another path",
            errno.ENOTDIR: "a part of this path is a file, not a folder; choose another path",
            errno.EACCES: "it cannot be written or read here; fix the permissions or choose another path",
            errno.EPERM: "it cannot be written or read here; fix the permissions or choose another path",
            errno.EROFS: "the file system is read-only; choose another path",
            errno.EISDIR: "it is a folder; give a file name"}.get(err.errno)
    return where + (f"; {hint}" if hint else "")


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    from rich.text import Text

    from livar_bench.cli.ui import console

    def fail(message: str) -> None:
        console.print(Text("error: ", style="bold red") + Text(message), highlight=False, soft_wrap=True)
        sys.exit(2)

    try:  # typer 0.29 ships its own copy of click
        from typer._click import exceptions as cx
    except ImportError:  # older typer: click itself
        from click import exceptions as cx

    from livar_bench import interrupt

    interrupt.install()  # a Ctrl-C swallowed by a finaliser is raised again at the next round
    try:
        code = app(standalone_mode=False)  # typer then raises click's errors instead of printing a usage box
    except cx.NoArgsIsHelpError as err:
        err.show()
        sys.exit(err.exit_code)
    except cx.UsageError as err:  # unknown option, value of the wrong type, ...
        hint = f" (see `{err.ctx.command_path} --help`)" if err.ctx is not None else ""
        fail(err.format_message().replace("\n", " ") + hint)
    except cx.ClickException as err:
        fail(err.format_message().replace("\n", " "))
    except typer.Abort:  # end of input at a prompt
        console.print("aborted", highlight=False)
        sys.exit(1)
    except BenchError as err:
        fail(str(err))
    except OSError as err:  # an output folder that cannot be created or written, a full disk, ...
        import errno
        from pathlib import Path

        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            from livar_bench.store import disk_full

            fail(str(disk_full(err, Path(err.filename or "."))))
        fail(f"{err.strerror or err}{os_error_hint(err)}")
    except KeyboardInterrupt:
        console.print(INTERRUPTED, highlight=False, soft_wrap=True)
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 130 and _interrupted(exc):
            console.print(INTERRUPTED, highlight=False, soft_wrap=True)
        raise
    if code == 130:  # typer turned Ctrl-C into exit code 130 (it handles KeyboardInterrupt itself)
        console.print(INTERRUPTED, highlight=False, soft_wrap=True)
    if isinstance(code, int) and code:
        sys.exit(code)
