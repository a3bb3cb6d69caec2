"""The package's import graph has no circles, and the layers import only downwards."""

from __future__ import annotations

import ast
from pathlib import Path

import livar_bench

ROOT = Path(livar_bench.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every livar_bench module ``path`` imports, at module level or inside functions (lazy imports
    are still dependencies). ``from pkg import name`` counts as pkg.name when that is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("livar_bench")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("livar_bench"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            found |= subs or {node.module}
    return {m for m in found if m in modules}


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    edges = {}
    for name, path in paths.items():
        # A package's __init__ gathers its own submodules (the registry, the CLI commands); a submodule
        # importing its package's __init__ is that pattern, not a dependency circle.
        edges[name] = {m for m in imports_of(path, modules)
                       if not (name.startswith(m + ".") or m.startswith(name + ".") and path.name == "__init__.py")}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_client_does_not_import_methods_and_types_is_the_ground_floor() -> None:
    edges = graph()
    for name, deps in edges.items():
        if name.startswith("livar_bench.client"):
            assert not any(d.startswith("livar_bench.methods") for d in deps), (name, deps)
    assert edges["livar_bench.types"] == set()
