"""Reading user input for a RunSpec: one readable line per validation problem, YAML configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from livar_bench.errors import BenchError


def format_validation_error(err: ValidationError) -> str:
    """One line per problem, naming the field and what was wrong."""
    lines = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "spec"
        msg = item["msg"].removeprefix("Value error, ")  # a validator's own message says what is wrong
        if item["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif "input" in item and not isinstance(item["input"], dict):
            msg = f"{msg} (got {item['input']!r})"
        lines.append(f"{where}: {msg}")
    return "; ".join(lines)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with a clear message when the file is missing or malformed."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise BenchError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise BenchError(f"config file {p} is not valid YAML: {' '.join(str(err).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BenchError(f"config file {p} must hold a mapping of settings, not {type(data).__name__}")
    return data
