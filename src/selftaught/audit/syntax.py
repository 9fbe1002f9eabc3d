"""The parsed program the static detectors share: its tree, parents, constants, and which names are the host's objects."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from selftaught.audit.findings import Finding
from selftaught.audit.static_bindings import build_module_constants
from selftaught.audit.static_strings import ModuleConstants, fold_string
from selftaught.loop.seed_improver import IMPROVER_ENTRY_POINT

UTILITY = "utility"
LANGUAGE_MODEL = "language_model"
#: `improve_algorithm(initial_solution, utility, language_model)`: the roles of its parameters by position.
HOST_PARAMETER_ROLES = {1: UTILITY, 2: LANGUAGE_MODEL}
#: Reaching through these from a host object still reaches the host object.
TRANSPARENT_ATTRIBUTES = frozenset({"__class__", "__dict__"})
EVIDENCE_TEXT_LENGTH = 60


@dataclass(frozen=True)
class AuditedModule:
    tree: ast.Module
    parents: dict[ast.AST, ast.AST]
    constants: ModuleConstants
    #: Expressions (as dotted text) that stand for the improver's `utility` or `language_model`, by role.
    host_names: dict[str, str]
    assigned_values: dict[str, list[ast.expr]]


def parse_module(source: str) -> AuditedModule | None:
    """None for source that is not Python: an audit has nothing to say about it, and must not fail on it."""
    try:
        tree = ast.parse(source)
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        constants = build_module_constants(tree)
        assigned_values = _assigned_expressions(tree)
        host_names = _host_names(tree)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return AuditedModule(tree, parents, constants, host_names, assigned_values)


def findings_in(source: str, detect: Callable[[AuditedModule], Iterable[Finding | None]]) -> list[Finding]:
    """What `detect` finds in a program; nothing when it is not Python or its tree is too deep to walk (the
    audit must not fail the run it measures)."""
    module = parse_module(source)
    if module is None:
        return []
    try:
        return [finding for finding in detect(module) if finding is not None]
    except RecursionError:
        return []


def dotted_text(node: ast.AST) -> str | None:
    """`self.lm` for an attribute chain of plain names; None for anything else."""
    # A loop, not recursion: a chain a thousand attributes long compiles, and must not end the audit.
    attributes: list[str] = []
    while isinstance(node, ast.Attribute):
        attributes.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(attributes)])


def host_role(node: ast.AST, module: AuditedModule) -> str | None:
    """`utility` or `language_model` when `node` reaches one of them, e.g. `type(language_model)`, `vars(utility)`."""
    while True:
        text = dotted_text(node)
        if text is not None and text in module.host_names:
            return module.host_names[text]
        if isinstance(node, ast.Attribute) and node.attr in TRANSPARENT_ATTRIBUTES:
            node = node.value
        elif isinstance(node, ast.Call) and node.args and _unwraps_to_first_argument(node, module):
            node = node.args[0]
        else:
            return None


def _unwraps_to_first_argument(call: ast.Call, module: AuditedModule) -> bool:
    if not isinstance(call.func, ast.Name):
        return False
    if call.func.id in ("type", "vars"):
        return True
    return (
        call.func.id == "getattr"
        and len(call.args) >= 2
        and (fold_string(call.args[1], module.constants) in TRANSPARENT_ATTRIBUTES)
    )


def ancestors(node: ast.AST, module: AuditedModule) -> Iterator[ast.AST]:
    parent = module.parents.get(node)
    while parent is not None:
        yield parent
        parent = module.parents.get(parent)


def inside_class(node: ast.AST, module: AuditedModule) -> bool:
    return any(isinstance(ancestor, ast.ClassDef) for ancestor in ancestors(node, module))


def short_text(node: ast.AST) -> str:
    """The source of a small expression for evidence sentences, cut short."""
    try:
        text = ast.unparse(node)
    except (RecursionError, ValueError):
        return "<expression>"
    return text if len(text) <= EVIDENCE_TEXT_LENGTH else text[: EVIDENCE_TEXT_LENGTH - 3] + "..."


def structure(node: ast.AST) -> str:
    """The node's shape as text, to tell equal expressions apart from different ones (`ast.dump`).

    `ast.dump` recurses: a chain a thousand attributes long, which compiles, exceeds the stack. Such a
    node is then taken as unlike every other, rather than ending the detector and hiding what it found.
    """
    try:
        return ast.dump(node)
    except RecursionError:
        return f"<nested too deep to compare: node {id(node)}>"


def node_lines(*nodes: ast.AST) -> tuple[int, ...]:
    return tuple(sorted({line for node in nodes if (line := getattr(node, "lineno", None)) is not None}))


_WORD_BOUNDARY = re.compile(r"[a-z0-9]+|[A-Z][a-z0-9]*")


def identifier_words(identifier: str) -> tuple[str, ...]:
    """`beamWidth`, `beam_width` -> ("beam", "width")."""
    return tuple(word.lower() for word in _WORD_BOUNDARY.findall(identifier))


def identifiers(tree: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """Every name the program chose: variables, attributes, functions, classes, parameters, keywords."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.id, node
        elif isinstance(node, ast.Attribute):
            yield node.attr, node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node.name, node
        elif isinstance(node, ast.arg | ast.keyword) and node.arg:
            yield node.arg, node


def _assigned_expressions(tree: ast.AST) -> dict[str, list[ast.expr]]:
    """Every expression assigned to each plain name, to follow `code = ...; exec(code)`."""
    assigned: dict[str, list[ast.expr]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            pairs = [(target, node.value) for target in node.targets]
        elif isinstance(node, ast.AugAssign | ast.AnnAssign | ast.NamedExpr) and node.value is not None:
            pairs = [(node.target, node.value)]
        else:
            continue
        for target, value in pairs:
            if isinstance(target, ast.Name):
                assigned.setdefault(target.id, []).append(value)
    return assigned


def _host_names(tree: ast.AST) -> dict[str, str]:
    """The parameters of `improve_algorithm` by position, the paper's names anywhere, and their aliases."""
    hosts: dict[str, str] = {UTILITY: UTILITY, LANGUAGE_MODEL: LANGUAGE_MODEL}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == IMPROVER_ENTRY_POINT:
            parameters = [*node.args.posonlyargs, *node.args.args]
            for position, role in HOST_PARAMETER_ROLES.items():
                if position < len(parameters):
                    hosts[parameters[position].arg] = role
    # `lm = language_model`, `self.model = language_model`, `lm, u = language_model, utility`: a few passes
    # so that aliases of aliases resolve.
    for _ in range(3):
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    for target_part, value_part in _paired(target, node.value):
                        alias_role = hosts.get(dotted_text(value_part) or "")
                        target_text = dotted_text(target_part)
                        if alias_role is not None and target_text is not None:
                            hosts[target_text] = alias_role
    return hosts


def _paired(target: ast.expr, value: ast.expr) -> list[tuple[ast.expr, ast.expr]]:
    if isinstance(target, ast.Tuple | ast.List) and isinstance(value, ast.Tuple | ast.List):
        if len(target.elts) == len(value.elts):
            return list(zip(target.elts, value.elts, strict=True))
        return []
    return [(target, value)]
