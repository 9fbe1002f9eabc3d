"""What the names of a module stand for, statically: imported modules under their local names, and constants.

`attribute = "bud" + "get"` then `setattr(language_model, attribute, 10**9)` hides the name in a
variable; `g = __import__("g" + "c")` hides a module. Both are found by folding every assignment
in a few passes, so that names built from other names resolve too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from selftaught.audit.static_strings import DYNAMIC_IMPORTS, ModuleConstants, dotted_name, fold

BINDING_PASSES = 4
MAX_CANDIDATES_PER_NAME = 8


def build_module_constants(tree: ast.AST) -> ModuleConstants:
    """Imports first (folding needs `base64` resolved), then constants, then aliases that need both."""
    constants = ModuleConstants(imports=_static_imports(tree))
    for _ in range(BINDING_PASSES):
        changed = _bind_aliases(tree, constants)
        changed = _bind_constants(tree, constants) or changed
        if not changed:
            break
    return constants


def _static_imports(tree: ast.AST) -> dict[str, str]:
    imports: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    imports[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    imports[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                imports[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return imports


def _bind_aliases(tree: ast.AST, constants: ModuleConstants) -> bool:
    """`g = __import__("gc")`, `objects = gc.get_objects`: local names for modules and their functions."""
    changed = False
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if name in constants.imports:
            continue
        if (isinstance(node.value, ast.Call) and dotted_name(node.value.func, constants) in DYNAMIC_IMPORTS) or (
            isinstance(node.value, ast.Name | ast.Attribute) and _root_name(node.value) in constants.imports
        ):
            module = dotted_name(node.value, constants)
        else:
            continue
        if module is not None:
            constants.imports[name] = module
            changed = True
    return changed


def _bind_constants(tree: ast.AST, constants: ModuleConstants) -> bool:
    changed = False
    for node in ast.walk(tree):
        for name, value in _assigned_values(node, constants):
            changed = _add_candidate(constants, name, value) or changed
    return changed


def _add_candidate(constants: ModuleConstants, name: str, value: object) -> bool:
    known = constants.candidates.setdefault(name, [])
    if len(known) >= MAX_CANDIDATES_PER_NAME or any(_same(value, other) for other in known):
        return False
    known.append(value)
    return True


def _same(left: object, right: object) -> bool:
    # 0 == False in Python; both stay candidates so that a report can show what was written.
    return type(left) is type(right) and left == right


def _assigned_values(node: ast.AST, constants: ModuleConstants) -> Iterable[tuple[str, object]]:
    if isinstance(node, ast.Assign | ast.AnnAssign | ast.NamedExpr) and node.value is not None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        known = fold(node.value, constants)
        if known is not None:
            for target in targets:
                yield from _unpack(target, known.value)
    elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
        # `name = "bud"; name += "get"`: the folded sum joins the name's candidates.
        load = ast.Name(id=node.target.id, ctx=ast.Load())
        known = fold(ast.BinOp(left=load, op=node.op, right=node.value), constants)
        if known is not None:
            yield node.target.id, known.value
    elif isinstance(node, ast.For | ast.comprehension) and isinstance(node.target, ast.Name):
        # `for attribute in ["bud" + "get", "uses"]`: the loop variable may be any element.
        known = fold(node.iter, constants)
        if known is not None and isinstance(known.value, tuple | str):
            for element in tuple(known.value)[:MAX_CANDIDATES_PER_NAME]:
                yield node.target.id, element


def _unpack(target: ast.AST, value: object) -> Iterable[tuple[str, object]]:
    if isinstance(target, ast.Name):
        yield target.id, value
    elif isinstance(target, ast.Tuple | ast.List) and isinstance(value, tuple) and len(value) == len(target.elts):
        for element_target, element in zip(target.elts, value, strict=True):
            yield from _unpack(element_target, element)


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def value_candidates(node: ast.AST, constants: ModuleConstants) -> list[object]:
    """Every value `node` may stand for: all constants a bare name was bound to, or the one folded value."""
    if isinstance(node, ast.Name) and len(constants.candidates.get(node.id, [])) > 1:
        return list(constants.candidates[node.id])
    known = fold(node, constants)
    return [] if known is None else [known.value]


def string_candidates(node: ast.AST, constants: ModuleConstants) -> set[str]:
    return {value for value in value_candidates(node, constants) if isinstance(value, str)}
