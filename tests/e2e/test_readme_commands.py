"""Every ``livar-bench`` command the README prints names a real command and only options it has.

The README is the user's guide and its examples must run as printed; a renamed or removed option would
otherwise leave a command that fails at the first paste. (Running each example is the job of the tests of
each feature; this catches the drift between the text and the CLI.)
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import typer.main

from livar_bench.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[str]:
    """Each ``livar-bench ...`` command of the README: lines of its bash blocks, and inline code spans."""
    text = README.read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            found.append(line.split("  #")[0].strip())
    found += re.findall(r"`(livar-bench [^`]*)`", text)
    commands = []
    for line in found:
        for part in re.split(r"\s*(?:&&|\|\||;)\s*", line):
            if part.startswith("livar-bench ") and "..." not in part:
                commands.append(part)
    return commands


COMMANDS = readme_commands()


def test_the_readme_prints_the_commands_this_test_reads():
    """The extraction finds the examples (a README reshuffle must not make the next test vacuous)."""
    names = {shlex.split(c)[1] for c in COMMANDS}
    assert {"run", "sweep", "table", "report", "tune", "ls"} <= names, names
    assert any("--tracker" in c for c in COMMANDS) and any("--executor slurm" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_names_a_real_command_and_its_options(command):
    words = shlex.split(command)[1:]
    cmd: click.Command = typer.main.get_command(app)
    while isinstance(cmd, click.Group) and words and not words[0].startswith("-"):
        sub = cmd.commands.get(words[0])
        assert sub is not None, f"{command!r}: no command {words[0]!r} (have {sorted(cmd.commands)})"
        cmd, words = sub, words[1:]
    options = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    unknown = [w.split("=")[0] for w in words if w.startswith("--") and w.split("=")[0] not in options]
    assert not unknown, f"{command!r}: {cmd.name} has no option {unknown}"
