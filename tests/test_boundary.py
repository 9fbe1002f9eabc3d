"""The trust boundary in the imports: the sandboxed child imports only the standard library and its siblings."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import selftaught.sandbox.child as child_package

CHILD_FOLDER = Path(child_package.__file__).parent
SIBLINGS = {path.stem for path in CHILD_FOLDER.glob("*.py")}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_child_modules_import_only_the_standard_library_and_each_other() -> None:
    allowed = set(sys.stdlib_module_names) | SIBLINGS | {"__future__"}
    for path in CHILD_FOLDER.glob("*.py"):
        imports = imported_modules(path) - {"numpy"} if path.name == "runner.py" else imported_modules(path)
        assert imports <= allowed, f"{path.name} imports {sorted(imports - allowed)}"


def test_the_protocol_never_imports_host_code() -> None:
    assert imported_modules(CHILD_FOLDER / "protocol.py") <= set(sys.stdlib_module_names) | {"__future__"}
