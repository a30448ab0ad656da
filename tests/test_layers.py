"""The house's floors: every module of the installed package imports only from its own
layer or the layers beneath it, and no two modules import each other, directly or
around a loop.

This test is the one place the layer order is written (docs/architecture.md draws it).
Every import counts: at module level, inside a function, under ``TYPE_CHECKING`` - a
cycle held together by a late import is still a cycle.
"""

from __future__ import annotations

import ast
import importlib
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Bottom-up. A module belongs to the layer of the longest prefix below that names it.
LAYERS: tuple[tuple[str, ...], ...] = (
    # 1. records: errors, plain data and the file helpers every layer uses
    ("duoseg.core.errors", "duoseg.core.components", "duoseg.core.fs", "duoseg.core.records"),
    # 2. the extension points, one module per kind
    ("duoseg.core.interfaces",),
    # 3. the registry, its hooks, config loading
    ("duoseg.core.hookspecs", "duoseg.core.registry", "duoseg.core.config"),
    # 4. the engine: data, training, inference (and duoseg.core, which re-exports it)
    ("duoseg.core",),
    # 5. the built-in plugins, then the phantom data set, the conformance suites, the
    #    Python API and the applications, each on the ones before it
    ("duoseg.plugins",),
    ("duoseg.phantoms",),
    ("duoseg.testing",),
    ("duoseg", "duoseg.api"),
    ("duoseg.apps",),
)


def package_modules() -> dict[str, Path]:
    """Every module of the distribution by its import name, found through pyproject's
    package-dir mapping (the folders are not named as the packages)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = project["tool"]["setuptools"]["package-dir"]
    modules: dict[str, Path] = {}
    for package, folder in folders.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def imported(name: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """The package's modules that ``name`` imports, with the line of each import."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]  # fmt: skip
        else:
            continue
        for dotted in targets:
            target = dotted
            while target and target not in modules:  # `import a.b` of a class a.b.C
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, node.lineno


def layer_of(name: str) -> int:
    matches = [
        (len(prefix), index)
        for index, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if name == prefix or name.startswith(prefix + ".")
    ]
    assert matches, f"module {name} has no layer in tests/test_layers.py LAYERS"
    return max(matches)[1]


def import_graph() -> dict[str, dict[str, int]]:
    modules = package_modules()
    return {name: dict(imported(name, path, modules)) for name, path in modules.items()}


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = stack[stack.index(node) :]
            del stack[stack.index(node) :]
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_every_folder_and_every_kind_of_import() -> None:
    graph = import_graph()
    assert {"duoseg.core.interfaces.method", "duoseg.plugins.networks.net2"} <= set(graph)
    assert "duoseg.core.registry" in graph["duoseg.core.data.cache"]  # a function-level one


def test_no_module_imports_up_a_layer() -> None:
    graph = import_graph()
    upward = [
        f"{name} (layer {layer_of(name) + 1}) imports {target} (layer {layer_of(target) + 1}) "
        f"at line {line}"
        for name, targets in sorted(graph.items())
        for target, line in sorted(targets.items())
        if layer_of(target) > layer_of(name)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_a_cycle_and_an_upward_import_are_caught() -> None:
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {}}) == [["a", "b", "c"]]
    assert layer_of("duoseg.core.interfaces.store") < layer_of("duoseg.core.registry")
    assert layer_of("duoseg.core.data.cache") < layer_of("duoseg.plugins.stores")
    assert layer_of("duoseg.core.records.preprocessing") == 0


def test_every_module_imports() -> None:
    """The fast loop (``-m "not slow"``) imports every module at least here."""
    for name in sorted(package_modules()):
        importlib.import_module(name)
