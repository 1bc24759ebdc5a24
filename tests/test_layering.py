"""The sans-I/O rule, enforced: the core imports no I/O, no clock and no RNG.

DESIGN.md: ``schemas/``, ``crypto/`` and the ``core`` modules of ``server/`` and
``client/`` never import aiohttp, aiosqlite or asyncio and never read the clock or
the RNG themselves; dependencies point one way (schemas ← crypto ← cores).
"""

from __future__ import annotations

import ast
import subprocess  # nosec B404 - runs this interpreter on a fixed snippet
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "aiohttp",
    "aiosqlite",
    "asyncio",
    "socket",
    "time",
    "random",
    "secrets",
    "os",
    "datetime",
    "sqlite3",
}
LAYERS = {"schemas": {"schemas"}, "crypto": {"schemas", "crypto"}}


def core_files() -> list[Path]:
    files = [*sorted((ROOT / "schemas").glob("*.py")), *sorted((ROOT / "crypto").glob("*.py"))]
    for edge in ("server", "client", "witness"):
        files += sorted((ROOT / edge).glob("core*.py")) + sorted((ROOT / edge / "core").glob("*.py"))
    return files


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_does_no_io(path: Path) -> None:
    bad = {m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_dependencies_point_one_way(layer: str) -> None:
    allowed = LAYERS[layer]
    for path in sorted((ROOT / layer).glob("*.py")):
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "caseline":
                assert parts[1] in allowed, f"{layer}/{path.name} imports {module}"


#: Modules that must import in a fresh interpreter without pulling in any I/O library.
IO_FREE_IMPORTS = ("caseline.client.core", "caseline.server.core", "caseline.crypto.caselog")


@pytest.mark.parametrize("module", IO_FREE_IMPORTS)
def test_core_imports_without_io_libraries(module: str) -> None:
    """The AST check above sees one file; this one sees what importing it really loads.

    A package ``__init__`` that eagerly imports its I/O edge would drag aiohttp
    in behind a clean core module; this catches that.
    """
    code = (
        f"import sys, {module}\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp', 'aiosqlite', 'asyncio'})\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_client_package_still_exports_its_names() -> None:
    import caseline.client as package

    for name in package.__all__:
        assert getattr(package, name) is not None
    with pytest.raises(AttributeError):
        _ = package.NoSuchName


def module_graph() -> dict[str, set[str]]:
    """Every first-party module (package code, tests, bench, fuzz) and what it imports.

    ``from package import submodule`` counts as importing the submodule, and
    imports inside functions count too: a deferred import hides a cycle from
    the interpreter, not from the design.
    """
    files: dict[str, Path] = {}
    for top in ("schemas", "crypto", "server", "client", "tests", "bench", "fuzz"):
        prefix = ("caseline",) if top in {"schemas", "crypto", "server", "client"} else ()
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = (*prefix, *path.relative_to(ROOT).with_suffix("").parts)
            files[".".join(parts).removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = {f"{node.module}.{alias.name}" for alias in node.names} & files.keys()
                deps.update(subs or {node.module})
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_no_import_cycles() -> None:
    assert cycles(module_graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_bench_and_fuzz_use_only_the_shared_test_support() -> None:
    """Helpers shared with bench/ and fuzz/ live in ``tests.support``, which imports no test module."""
    graph = module_graph()
    for name, deps in graph.items():
        top = name.split(".")[0]
        if top in {"bench", "fuzz"} or name.startswith("tests.support"):
            bad = {d for d in deps if d.startswith("tests.") and not d.startswith("tests.support")}
            assert not bad, f"{name} imports {sorted(bad)}"
        if name.startswith("tests.support"):
            bad = {d for d in deps if d.split(".")[0] in {"bench", "fuzz"}}
            assert not bad, f"{name} imports {sorted(bad)}"
