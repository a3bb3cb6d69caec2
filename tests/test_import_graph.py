"""The package's import graph has no circles, and every module imports only its own layer or lower ones."""

from __future__ import annotations

import ast
from pathlib import Path

import livar_bench

ROOT = Path(livar_bench.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (annotations only: never run)."""
    hidden = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            hidden |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return hidden


def imports_of(path: Path, modules: set[str], type_only: bool = True) -> set[str]:
    """Every livar_bench module ``path`` imports, at module level or inside functions (lazy imports
    are still dependencies). ``from pkg import name`` counts as pkg.name when that is a module.
    ``type_only=False`` leaves out imports under ``if TYPE_CHECKING:`` (they never run, so they cannot
    make a circle at import time; the layer check still counts them)."""
    found = set()
    tree = ast.parse(path.read_text())
    hidden = set() if type_only else _type_only(tree)
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("livar_bench")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("livar_bench"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            found |= subs or {node.module}
    return {m for m in found if m in modules}


def graph(type_only: bool = True) -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    edges = {}
    for name, path in paths.items():
        # A package's __init__ gathers its own submodules (the registry, the CLI commands); a submodule
        # importing its package's __init__ is that pattern, not a dependency circle.
        edges[name] = {m for m in imports_of(path, modules, type_only)
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
    cycle = find_cycle(graph(type_only=False))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# The package's layers, lowest first. A module may import modules of its own layer or of lower ones,
# never of a higher one (DESIGN.md; README "Layout"). A new top-level module or package must be placed here.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("types", "errors", "digest", "seeding", "device", "progress", "resources", "interrupt"),  # ground floor
    ("store",),  # atomic files, digest-checked tensors, locks, the runs index
    ("ops", "privacy"),  # pure tensor maths; clipping, noise and the DP accountant
    ("data",),  # datasets, caches, partitions
    ("models",),  # backbones and the LoRA ViT
    ("client",),  # local training, objectives, signal collectors, message costs
    ("methods",),  # aggregators, stages, registry, spec grammar
    ("config",),  # RunSpec
    ("federation",),  # set-up, round kernel, round-1 cache, run folder, loop
    ("flower",),  # the Flower engine
    ("experiments",),  # sweeps, executors, tuning
    ("reporting",),  # tidy rows, pooling, pivots, rendering, plots
    ("bench",),  # throughput, FLOPs, server cost
    ("explain",),  # SHAP derivation of LIVAR's rule
    ("cli", "__main__"),  # the commands
)


def layer_of(module: str) -> int:
    """The layer index of a ``livar_bench.<top>...`` module (the package root itself: -1)."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1
    for index, names in enumerate(LAYERS):
        if parts[1] in names:
            return index
    raise AssertionError(f"{module} is in no layer; add {parts[1]!r} to LAYERS in tests/test_import_graph.py")


def upward_imports(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every (module, imported module) pair where the import goes to a higher layer."""
    return sorted((m, d) for m, deps in edges.items() for d in deps if layer_of(d) > layer_of(m))


def test_no_module_imports_a_layer_above_its_own() -> None:
    bad = upward_imports(graph())
    assert not bad, "imports that go up the layers: " + "; ".join(f"{m} -> {d}" for m, d in bad)


def test_the_layer_check_finds_an_upward_import() -> None:
    edges = {"livar_bench.client.costs": {"livar_bench.client.collectors", "livar_bench.methods.base"},
             "livar_bench.methods.base": {"livar_bench.types"}}
    assert upward_imports(edges) == [("livar_bench.client.costs", "livar_bench.methods.base")]


def test_every_module_has_a_layer_and_types_is_the_ground_floor() -> None:
    edges = graph()
    for name in edges:
        layer_of(name)  # raises for a module outside every layer
    assert edges["livar_bench.types"] == set()


def test_every_imported_name_exists_lazy_imports_included() -> None:
    """A name imported from a livar_bench module exists there, inside functions too: a lazy import that a
    move broke fails only when its branch runs (the Flower SecAgg+ client, in a Ray actor), so check
    them all statically here."""
    import importlib

    missing = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    and node.module.split(".")[0] == "livar_bench"):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if alias.name == "*" or hasattr(module, alias.name):
                    continue
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ModuleNotFoundError:
                    missing.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {node.module}.{alias.name}")
    assert not missing, "imported names that do not exist:\n" + "\n".join(missing)
