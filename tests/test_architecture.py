"""House rules of the package's layout, read from its sources with `ast`: nothing of selftaught is imported to check them.

- Every module says in the first line of its docstring what it owns. An `__init__.py` without a single
  statement is exempt: it only marks a folder as a package and owns nothing (its modules say what they own).
- The package's layering is a DAG: no import cycle among selftaught modules. Every import of a selftaught
  module counts wherever it stands, in a function too (a function-level import that only hides a cycle
  from the interpreter is still a cycle of the design); only imports under `if TYPE_CHECKING:` are left
  out, since they never run. Function-level imports that defer a heavy third-party dependency (numpy,
  llama_cpp, matplotlib) name no selftaught module, so they never enter the graph. An import is an edge to
  the module it names (`from selftaught.x import y` to `selftaught.x.y` when that is a module, else to
  `selftaught.x`), not to the packages above it: Python runs their `__init__.py` first, but a package that
  re-exports its own modules (archive/) is no layering problem.
  Relative imports are resolved; so are the bare sibling imports of `sandbox/child/` (below).
- `store/` sits at the bottom: it imports only the standard library, `selftaught.store.*` and
  `selftaught.errors`, TYPE_CHECKING imports included.
- `sandbox/child/` is the code of the sandboxed child, which runs as `python -S -s child/runner.py` (or
  `child/zygote.py`, the fork server): its folder is the first entry of its path, no site-packages, no
  selftaught package. Its modules import one another by bare name (`import protocol`) and otherwise only
  the standard library, but for numpy: the one package children are given (sandbox/packages.py),
  imported by the runner only when a task passes arrays.
- No function or method is longer than MAX_FUNCTION_LINES lines, from its `def` to its end without its
  docstring, unless LONG_FUNCTIONS names it with the reason; an entry no longer needed fails too.
- Tests never reach the internet: conftest's guard refuses it (checked here).
"""

from __future__ import annotations

import ast
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCES = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "selftaught"
STORE = "selftaught.store"
CHILD = "selftaught.sandbox.child"
#: What `store/` may import besides the standard library and itself.
STORE_ALLOWED = frozenset({"selftaught.errors"})
#: Third-party modules the child may import, with why.
CHILD_THIRD_PARTY = {"numpy": "the one allowed package; the runner decodes task arrays with it"}
MAX_FUNCTION_LINES = 60
#: "module:qualified name" of the functions allowed to be longer, with the reason.
LONG_FUNCTIONS = {
}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def where(self) -> str:
        return str(self.path.relative_to(SOURCES))


@dataclass(frozen=True)
class Import:
    """One module an import statement names, resolved to its absolute name."""

    target: str
    line: int
    type_checking: bool


def _modules() -> dict[str, Module]:
    found = {}
    for path in sorted((SOURCES / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SOURCES).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = Module(name, path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST, type_checking: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under `node` (in functions and classes too), and whether it is under TYPE_CHECKING."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, type_checking
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.body:
                yield from _import_nodes(ast.Module(body=[statement], type_ignores=[]), True)
            for statement in child.orelse:
                yield from _import_nodes(ast.Module(body=[statement], type_ignores=[]), type_checking)
        else:
            yield from _import_nodes(child, type_checking)


def _absolute(module: Module, name: str) -> str:
    """A bare name in `sandbox/child/` is a sibling when one of that name exists (the child's path starts there)."""
    head = name.split(".")[0]
    if module.name.startswith(CHILD + ".") and f"{CHILD}.{head}" in MODULES:
        return f"{CHILD}.{name}"
    return name


def imports_of(module: Module) -> list[Import]:
    found = []
    for node, type_checking in _import_nodes(module.tree):
        if isinstance(node, ast.Import):
            targets = [_absolute(module, alias.name) for alias in node.names]
        else:
            if node.level:
                package = module.name if module.is_package else module.name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = _absolute(module, node.module or "")
            # `from package import module` names the module; `from module import name` the module itself.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        found += [Import(target, node.lineno, type_checking) for target in dict.fromkeys(targets)]
    return found


def _own_module(name: str) -> str | None:
    """The selftaught module an imported name lands in (its longest known prefix), or None for another package."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_standard_library(name: str) -> bool:
    return name.split(".")[0] in sys.stdlib_module_names


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_says_in_one_line_what_it_owns(name: str) -> None:
    problem = _docstring_problem(MODULES[name])
    assert problem is None, problem


def _docstring_problem(module: Module) -> str | None:
    if module.is_package and not module.tree.body:
        return None
    docstring = ast.get_docstring(module.tree, clean=False)
    if not docstring:
        return f"{module.where} has no module docstring saying what it owns"
    lines = docstring.split("\n")
    if not lines[0].strip():
        return f"{module.where}: the docstring's first line is blank"
    if len(lines) > 1 and lines[1].strip():
        return f"{module.where}: the docstring's summary runs past its first line (one line, then a blank one)"
    if not lines[0].rstrip().endswith((".", "?", "!")):
        return f"{module.where}: the docstring's first line is not a whole sentence"
    return None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, module in MODULES.items():
        for imported in imports_of(module):
            target = _own_module(imported.target)
            if target is not None and target != name and not imported.type_checking:
                graph[name].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that ends where it starts, or None when it is a DAG."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for following in sorted(graph[node]):
            if state.get(following) == 1:
                return [*path[path.index(following) :], following]
            if following not in state and (found := visit(following)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycles_are_found_and_shown() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]


def _foreign_imports(package: str, allowed: Callable[[str], bool]) -> list[str]:
    """`file:line target` for each import in `package` that `allowed(target)` refuses."""
    refused = []
    for name, module in MODULES.items():
        if _inside(name, package):
            refused += [
                f"{module.where}:{imported.line} {imported.target}"
                for imported in imports_of(module)
                if not allowed(imported.target)
            ]
    return refused


def test_the_store_imports_only_the_standard_library_itself_and_errors() -> None:
    def allowed(target: str) -> bool:
        own = _own_module(target)
        return (own is None and _is_standard_library(target)) or (
            own is not None and (_inside(own, STORE) or own in STORE_ALLOWED)
        )

    refused = _foreign_imports(STORE, allowed)
    assert not refused, "store/ imports what sits above it:\n" + "\n".join(refused)


def test_the_sandboxed_child_imports_only_the_standard_library_and_its_own_modules() -> None:
    def allowed(target: str) -> bool:
        own = _own_module(target)
        if own is not None:
            return _inside(own, CHILD)
        return _is_standard_library(target) or target.split(".")[0] in CHILD_THIRD_PARTY

    refused = _foreign_imports(CHILD, allowed)
    assert not refused, "sandbox/child/ runs without the selftaught package or site-packages:\n" + "\n".join(refused)


def test_relative_and_sibling_imports_are_resolved() -> None:
    tree = ast.parse("from . import protocol\nfrom .. import launcher\nimport watch\nfrom .protocol import frame\n")
    child = Module(f"{CHILD}.runner", SOURCES / "selftaught/sandbox/child/runner.py", tree)
    assert [imported.target for imported in imports_of(child)] == [
        f"{CHILD}.protocol",
        "selftaught.sandbox.launcher",
        f"{CHILD}.watch",
        f"{CHILD}.protocol",
    ]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import reading\n")
    store = Module(f"{STORE}.run_store", SOURCES / "selftaught/store/run_store.py", tree)
    assert [(imported.target, imported.type_checking) for imported in imports_of(store)] == [
        ("typing", False),
        (f"{STORE}.reading", True),
    ]


def _function_lengths(module: Module) -> Iterator[tuple[str, int, int]]:
    """(qualified name, first line, length) of every function and method, from `def` to its end, docstring left out."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                first = child.body[0]
                if ast.get_docstring(child, clean=False) is not None:
                    length -= (first.end_lineno or first.lineno) - first.lineno + 1
                yield prefix + child.name, child.lineno, length
                yield from walk(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, prefix + child.name + ".")
            else:
                yield from walk(child, prefix)

    yield from walk(module.tree, "")


def test_no_function_is_longer_than_the_limit_without_a_reason() -> None:
    lengths = {
        f"{name}:{function}": (f"{module.where}:{line}", length)
        for name, module in MODULES.items()
        for function, line, length in _function_lengths(module)
    }
    too_long = [
        f"{where} {key} has {length} lines"
        for key, (where, length) in sorted(lengths.items())
        if length > MAX_FUNCTION_LINES and key not in LONG_FUNCTIONS
    ]
    limit = f"over {MAX_FUNCTION_LINES} lines (split it, or list it with a reason):\n"
    assert not too_long, limit + "\n".join(too_long)
    stale = [key for key in LONG_FUNCTIONS if key not in lengths or lengths[key][1] <= MAX_FUNCTION_LINES]
    assert not stale, "no longer too long, or gone: remove from LONG_FUNCTIONS:\n" + "\n".join(stale)


def test_tests_cannot_reach_the_internet(internet_refused: list[str], tmp_path: Path) -> None:
    with socket.socket() as sock, pytest.raises(OSError, match="tests never reach the internet"):
        sock.connect(("192.0.2.1", 80))  # TEST-NET-1, never routed
    with pytest.raises(OSError, match="tests never reach the internet"):
        socket.create_connection(("example.org", 80), timeout=1)
    assert internet_refused[-2:] == ["a connection to ('192.0.2.1', 80)", "looking up 'example.org'"]
    del internet_refused[-2:]  # refused on purpose: this test must not fail for them
    with socket.socket() as listener, socket.socket() as sock:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        sock.connect(listener.getsockname())
    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(FileNotFoundError):
        sock.connect(str(tmp_path / "nothing"))
