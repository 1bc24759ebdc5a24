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
    for edge in ("server", "client"):
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
