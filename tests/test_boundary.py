"""The trust boundary in the imports: the sandboxed child imports only the standard library and its siblings."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import selftaught.sandbox.child as child_package

CHILD_FOLDER = Path(child_package.__file__).parent
CHILD_PACKAGE = child_package.__name__
SIBLINGS = {path.stem for path in CHILD_FOLDER.glob("*.py")}
STANDARD = set(sys.stdlib_module_names) | {"__future__"}


def relative_target(node: ast.ImportFrom, alias: str) -> str:
    """What `from <dots><module> import <alias>` in a child module names, as an absolute module.

    An import that lands in the child folder is named as the child itself imports siblings
    (`protocol`); one that climbs out keeps its full name (`selftaught.sandbox.launcher`), and
    one that climbs past the top of the package is left relative, so that it matches nothing allowed.
    """
    parts = CHILD_PACKAGE.split(".")
    if node.level - 1 >= len(parts):
        return "." * node.level + (node.module or alias)
    base = ".".join(parts[: len(parts) - (node.level - 1)])
    target = f"{base}.{node.module}" if node.module else (base if alias == "*" else f"{base}.{alias}")
    inside = target.removeprefix(CHILD_PACKAGE + ".")
    return inside if target != inside and inside.split(".")[0] in SIBLINGS else target


def imported_modules(source: str) -> set[str]:
    """Every module a child module's source imports, relative imports resolved."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.update(relative_target(node, alias.name) for alias in node.names)
    return names


def forbidden_imports(source: str, allowed: set[str]) -> set[str]:
    return {name for name in imported_modules(source) if name.split(".")[0] not in allowed}


def test_child_modules_import_only_the_standard_library_and_each_other() -> None:
    for path in CHILD_FOLDER.glob("*.py"):
        allowed = STANDARD | SIBLINGS | ({"numpy"} if path.name == "runner.py" else set())
        forbidden = forbidden_imports(path.read_text(), allowed)
        assert not forbidden, f"{path.name} imports {sorted(forbidden)}"


def test_the_protocol_never_imports_host_code() -> None:
    assert not forbidden_imports((CHILD_FOLDER / "protocol.py").read_text(), STANDARD)


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("from ..launcher import Launcher", {"selftaught.sandbox.launcher"}),
        ("from .. import launcher", {"selftaught.sandbox.launcher"}),
        ("from ...store.run_store import RunStore", {"selftaught.store.run_store"}),
        ("from . import launcher", {"selftaught.sandbox.child.launcher"}),
        ("from . import *", {"selftaught.sandbox.child"}),
        ("from ..... import anything", {".....anything"}),
        ("import selftaught.sandbox.launcher", {"selftaught.sandbox.launcher"}),
        ("from . import protocol\nfrom .watch import audit\nimport json", set()),
    ],
)
def test_the_checker_resolves_relative_imports_and_flags_those_that_leave_the_child(
    source: str, flagged: set[str]
) -> None:
    assert forbidden_imports(source, STANDARD | SIBLINGS) == flagged
