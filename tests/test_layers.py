"""The package's layers: module-level imports point down only, and never in a cycle.

Lowest first (docs/DESIGN.md draws it). A module may import its own layer and
the layers below; ``droplab.execution`` (scale-out infrastructure) imports only
the leaves and is imported only by the applications and the command line.
Imports inside functions (optional dependencies, loaded on first use) are not
module-level and are not walked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "droplab"

LEAVES = (
    "droplab._validation",
    "droplab.rng",
    "droplab.masks",
    "droplab.scaling",
    "droplab.distributed",
    "droplab.mesh",  # where a DTensor shard lies in its logical tensor's stream
    "droplab._data",  # the data files shipped in the package, read with importlib
)
LAYERS: tuple[tuple[str, ...], ...] = (
    LEAVES,
    ("droplab.kernels",),
    ("droplab._core",),
    ("droplab.variants",),
    ("droplab.interop",),  # torch's dropout -> droplab's: convert, intercept
    ("droplab.functional", "droplab.nn"),  # the public façades: re-exports only
    ("droplab.uncertainty",),
    ("droplab",),  # the root façade: it re-exports uncertainty's mc_predict too
    ("droplab.lab",),
    ("droplab.cli",),
)
EXECUTION = "droplab.execution"
MAY_IMPORT_EXECUTION = ("droplab.uncertainty", "droplab.lab", "droplab.cli", EXECUTION)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    module_name(path): path
    for path in sorted(PACKAGE.rglob("*.py"))
    if path.name != "__main__.py"
}


def within(module: str, groups: tuple[str, ...]) -> bool:
    """Whether ``module`` is one of ``groups`` or inside one (the root: itself only)."""
    return any(
        module == group or (group != "droplab" and module.startswith(group + "."))
        for group in groups
    )


def rank(module: str) -> int | None:
    """The index in :data:`LAYERS` of the layer ``module`` belongs to."""
    best: tuple[int, int] | None = None  # (length of the matching group, layer)
    for index, layer in enumerate(LAYERS):
        for group in layer:
            if within(module, (group,)) and (best is None or len(group) > best[0]):
                best = (len(group), index)
    return None if best is None else best[1]


def module_level_imports(path: Path, *, in_functions: bool = False) -> set[str]:
    """The droplab modules ``path`` imports when it is imported itself (and,
    with ``in_functions``, those its functions import when they run)."""
    found: set[str] = set()

    def visit(nodes: list[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                if in_functions and not isinstance(node, ast.Lambda):
                    visit(list(ast.walk(node))[1:])
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("droplab"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] == "droplab":
                    for alias in node.names:
                        sub = f"{node.module}.{alias.name}"
                        found.add(sub if sub in MODULES else node.module)
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    visit(inner)

    visit(list(ast.parse(path.read_text(encoding="utf-8")).body))
    return found


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every edge of ``graph`` that points up, or into execution from below."""
    found = []
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            if within(target, (EXECUTION,)):
                ok = within(name, MAY_IMPORT_EXECUTION)
            elif within(name, (EXECUTION,)):
                ok = within(target, LEAVES)
            else:
                low, high = rank(target), rank(name)
                ok = low is not None and high is not None and low <= high
            if not ok:
                found.append(f"{name} -> {target}")
    return found


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (its modules in order), or ``[]``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(name: str, path: list[str]) -> list[str]:
        state[name] = 1
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if state.get(target) is None:
                found = walk(target, [*path, target])
                if found:
                    return found
        state[name] = 2
        return []

    for name in sorted(graph):
        if name not in state:
            found = walk(name, [name])
            if found:
                return found
    return []


GRAPH = {name: module_level_imports(path) for name, path in MODULES.items()}
# Every import, those run inside functions (optional dependencies, lazy
# loading) included.
ALL_IMPORTS = {
    name: module_level_imports(path, in_functions=True)
    for name, path in MODULES.items()
}


def test_every_module_has_a_layer():
    assert [n for n in MODULES if rank(n) is None and not within(n, (EXECUTION,))] == []


def test_the_top_level_has_at_most_ten_modules():
    modules = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= 10, modules


def test_module_level_imports_point_down():
    assert violations(GRAPH) == []


def test_no_module_level_import_cycle():
    assert cycle(GRAPH) == []


def test_imports_inside_functions_point_down_too():
    assert violations(ALL_IMPORTS) == []


def test_no_import_cycle_even_through_functions():
    # a package importing its own submodule on first use is not a cycle
    within_package = {
        name: {t for t in targets if not t.startswith(name + ".")}
        for name, targets in ALL_IMPORTS.items()
    }
    assert cycle(within_package) == []


@pytest.mark.parametrize(
    ("graph", "upward", "loop"),
    [
        ({"droplab.masks": {"droplab.nn"}}, ["droplab.masks -> droplab.nn"], []),
        (
            {"droplab.kernels.cpu": {"droplab.execution"}},
            ["droplab.kernels.cpu -> droplab.execution"],
            [],
        ),
        (
            {"droplab.rng": {"droplab.masks"}, "droplab.masks": {"droplab.rng"}},
            [],
            ["droplab.masks", "droplab.rng", "droplab.masks"],
        ),
    ],
)
def test_the_checks_catch_an_upward_edge_and_a_cycle(graph, upward, loop):
    assert violations(graph) == upward
    assert cycle(graph) == loop


def test_only_module_level_imports_are_walked(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import droplab.rng\nfrom droplab import kernels\ntry:\n    import droplab.masks\n"
        "except ImportError:\n    pass\ndef f():\n    from droplab import cli\n"
    )
    assert module_level_imports(source) == {
        "droplab.rng",
        "droplab.kernels",
        "droplab.masks",
    }
