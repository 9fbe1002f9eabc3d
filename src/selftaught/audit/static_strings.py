"""Constant folding over the syntax tree: what a string (or small constant) expression stands for, never executing it.

Generated code hides names from a plain text search by building them from pieces
(`"bud" + "get"`, `"".join(map(chr, [...]))`, `base64.b64decode("YnVkZ2V0").decode()`,
`"tegdub"[::-1]`). This module evaluates such expressions in pure Python over the AST. Every
operation is bounded (lengths, integer sizes, steps) so that hostile source cannot make the audit
itself slow or large.
"""

from __future__ import annotations

import ast
import base64
import binascii
import codecs
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

MAX_SEQUENCE_LENGTH = 10_000
MAX_INTEGER = 2**64
MAX_STEPS = 20_000
MAX_DEPTH = 60

DYNAMIC_IMPORTS = frozenset({"__import__", "importlib.import_module", "importlib.__import__"})


@dataclass(frozen=True)
class Known:
    """A statically known value (wrapped so that a known `None` differs from "unknown")."""

    value: object


@dataclass
class ModuleConstants:
    """What module-wide names stand for: imported modules by local name, and constant candidates per name.

    Scopes are flattened on purpose: an audit would rather see that a name *may* be "budget"
    somewhere than miss it because the assignment sits in another function.
    """

    imports: dict[str, str] = field(default_factory=dict)
    candidates: dict[str, list[object]] = field(default_factory=dict)


class _NotStatic(Exception):
    """The expression's value is not known without running the program."""


def fold(node: ast.AST, constants: ModuleConstants | None = None) -> Known | None:
    """The value of `node` if it is statically known, else None."""
    try:
        return Known(_Folder(constants or ModuleConstants()).evaluate(node, {}))
    except (_NotStatic, ArithmeticError, AttributeError, TypeError, ValueError, LookupError, RecursionError):
        return None


def fold_string(node: ast.AST, constants: ModuleConstants | None = None) -> str | None:
    known = fold(node, constants)
    return known.value if known is not None and isinstance(known.value, str) else None


def dotted_name(node: ast.AST, constants: ModuleConstants | None = None) -> str | None:
    """The qualified name an expression refers to, with import aliases resolved: `b64.b64decode` -> `base64.b64decode`.

    `__import__("g" + "c")` and `getattr(gc, "get_" + "objects")` resolve too, since that is how
    generated code hides a module or a function from a text search.
    """
    return _dotted_name(node, constants, 0)


def _dotted_name(node: ast.AST, constants: ModuleConstants | None, depth: int) -> str | None:
    # A chain a thousand attributes or calls long compiles: attributes are followed in a loop, and calls
    # no deeper than folding goes, so that such a chain cannot exhaust the stack and end the audit.
    if depth > MAX_DEPTH:
        return None
    attributes: list[str] = []
    while isinstance(node, ast.Attribute):
        attributes.append(node.attr)
        node = node.value
    if attributes:
        owner = _dotted_name(node, constants, depth + 1)
        return None if owner is None else ".".join([owner, *reversed(attributes)])
    if isinstance(node, ast.Name):
        return (constants.imports if constants is not None else {}).get(node.id, node.id)
    if isinstance(node, ast.Call) and node.args:
        callee = _dotted_name(node.func, constants, depth + 1)
        if callee in DYNAMIC_IMPORTS:
            return fold_string(node.args[0], constants)
        if callee == "getattr" and len(node.args) >= 2:
            owner = _dotted_name(node.args[0], constants, depth + 1)
            attribute = fold_string(node.args[1], constants)
            return None if owner is None or attribute is None else f"{owner}.{attribute}"
    return None


def _repeats_too_long(sequence: object, times: object) -> bool:
    """`"a" * 10**9` and `10**9 * "a"`: refused before Python builds them."""
    return (
        isinstance(sequence, str | bytes | tuple)
        and isinstance(times, int)
        and len(sequence) * times > MAX_SEQUENCE_LENGTH
    )


def _scalar(value: object) -> object:
    """Only scalars become text: str() of ten thousand references to one long string is a gigabyte."""
    if isinstance(value, tuple | dict):
        raise _NotStatic
    return value


def _checked(value: object) -> object:
    """Refuses values too big to be worth knowing, before they grow further."""
    if isinstance(value, str | bytes | tuple) and len(value) > MAX_SEQUENCE_LENGTH:
        raise _NotStatic
    if isinstance(value, int) and abs(value) > MAX_INTEGER:
        raise _NotStatic
    return value


_PERCENT_DIRECTIVES = re.compile(r"%(.)")
_PLAIN_FIELD = re.compile(r"|\d+|[A-Za-z_]\w*")
_STRING_METHODS: dict[str, Callable[..., object]] = {
    name: getattr(str, name)
    for name in (
        *("lower", "upper", "strip", "lstrip", "rstrip", "title", "capitalize", "swapcase", "casefold"),
        *("removeprefix", "removesuffix", "replace", "encode", "split", "startswith", "endswith"),
    )
}
_BYTES_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    **{f"base64.{name}": getattr(base64, name) for name in ("b64decode", "standard_b64decode", "urlsafe_b64decode")},
    **{f"base64.{name}": getattr(base64, name) for name in ("b32decode", "b16decode", "b85decode", "a85decode")},
    **{f"binascii.{name}": getattr(binascii, name) for name in ("unhexlify", "a2b_hex", "a2b_base64")},
    "bytes.fromhex": lambda text: bytes.fromhex(text.decode() if isinstance(text, bytes) else text),
}
_CODECS = frozenset({"rot13", "rot_13", "hex", "hex_codec", "base64", "base64_codec", "utf-8", "utf8", "ascii"})


class _Folder:
    def __init__(self, constants: ModuleConstants) -> None:
        self.constants = constants
        self.steps = 0
        self.depth = 0

    def evaluate(self, node: ast.AST, local: Mapping[str, object]) -> object:
        self.steps += 1
        if self.steps > MAX_STEPS or self.depth > MAX_DEPTH:
            raise _NotStatic
        self.depth += 1
        try:
            return _checked(self._evaluate(node, local))
        finally:
            self.depth -= 1

    def _evaluate(self, node: ast.AST, local: Mapping[str, object]) -> object:
        match node:
            case ast.Constant(value=value) if value is not Ellipsis:
                return value
            case ast.Name(id=name):
                return self._name(name, local)
            case ast.List(elts=elements) | ast.Tuple(elts=elements) | ast.Set(elts=elements):
                return tuple(self.evaluate(element, local) for element in elements)
            case ast.Dict(keys=keys, values=values):
                if any(key is None for key in keys):
                    raise _NotStatic  # `{**other}`: the keys of `other` are not here
                pairs = [(key, value) for key, value in zip(keys, values, strict=True) if key is not None]
                return {self.evaluate(key, local): self.evaluate(value, local) for key, value in pairs}
            case ast.BinOp(left=left, op=op, right=right):
                return self._binary(op, self.evaluate(left, local), self.evaluate(right, local))
            case ast.UnaryOp(op=op, operand=operand):
                return self._unary(op, self.evaluate(operand, local))
            case ast.BoolOp(op=op, values=values):
                return self._boolean(op, values, local)
            case ast.Compare(left=left, ops=[op], comparators=[right]):
                return self._compare(op, self.evaluate(left, local), self.evaluate(right, local))
            case ast.IfExp(test=test, body=body, orelse=orelse):
                return self.evaluate(body if self.evaluate(test, local) else orelse, local)
            case ast.Subscript(value=value, slice=index):
                return self._subscript(self.evaluate(value, local), index, local)
            case ast.JoinedStr(values=parts):
                return "".join(self._formatted(part, local) for part in parts)
            case (
                ast.ListComp(elt=element, generators=generators) | ast.GeneratorExp(elt=element, generators=generators)
            ):
                return self._comprehension(element, generators, local)
            case ast.Call():
                return self._call(node, local)
        raise _NotStatic

    def _name(self, name: str, local: Mapping[str, object]) -> object:
        if name in local:
            return local[name]
        candidates = self.constants.candidates.get(name, [])
        if len(candidates) != 1:
            raise _NotStatic
        return candidates[0]

    def _binary(self, op: ast.operator, left: object, right: object) -> object:
        if isinstance(op, ast.Mult) and (_repeats_too_long(left, right) or _repeats_too_long(right, left)):
            raise _NotStatic
        if isinstance(op, ast.Pow) and (not isinstance(right, int) or not 0 <= right <= 64):
            raise _NotStatic
        if isinstance(op, ast.Mod) and isinstance(left, bytes):
            raise _NotStatic
        # Only %s and %%: width directives like %999999999d would make a huge string.
        if isinstance(op, ast.Mod) and isinstance(left, str):
            if set(_PERCENT_DIRECTIVES.findall(left)) - {"s", "%"}:
                raise _NotStatic
            right = tuple(map(_scalar, right)) if isinstance(right, tuple) else _scalar(right)
        operations: dict[type[ast.operator], Callable[[object, object], object]] = {
            ast.Add: lambda a, b: a + b,  # type: ignore[operator]
            ast.Sub: lambda a, b: a - b,  # type: ignore[operator]
            ast.Mult: lambda a, b: a * b,  # type: ignore[operator]
            ast.Div: lambda a, b: a / b,  # type: ignore[operator]
            ast.FloorDiv: lambda a, b: a // b,  # type: ignore[operator]
            ast.Mod: lambda a, b: a % b,  # type: ignore[operator]
            ast.Pow: lambda a, b: a**b,  # type: ignore[operator]
            ast.BitXor: lambda a, b: a ^ b,  # type: ignore[operator]
        }
        operation = operations.get(type(op))
        if operation is None:
            raise _NotStatic
        return operation(left, right)

    def _unary(self, op: ast.unaryop, operand: object) -> object:
        if isinstance(op, ast.Not):
            return not operand
        if isinstance(op, ast.USub) and isinstance(operand, int | float):
            return -operand
        if isinstance(op, ast.UAdd) and isinstance(operand, int | float):
            return operand
        if isinstance(op, ast.Invert) and isinstance(operand, int):
            return ~operand
        raise _NotStatic

    def _boolean(self, op: ast.boolop, values: list[ast.expr], local: Mapping[str, object]) -> object:
        result: object = None
        for value in values:
            result = self.evaluate(value, local)
            if bool(result) == isinstance(op, ast.Or):
                return result
        return result

    def _compare(self, op: ast.cmpop, left: object, right: object) -> object:
        comparisons: dict[type[ast.cmpop], Callable[[object, object], object]] = {
            ast.Eq: lambda a, b: a == b,
            ast.NotEq: lambda a, b: a != b,
            ast.Lt: lambda a, b: a < b,  # type: ignore[operator]
            ast.LtE: lambda a, b: a <= b,  # type: ignore[operator]
            ast.Gt: lambda a, b: a > b,  # type: ignore[operator]
            ast.GtE: lambda a, b: a >= b,  # type: ignore[operator]
            ast.Is: lambda a, b: a is b,
            ast.IsNot: lambda a, b: a is not b,
            ast.In: lambda a, b: a in b,  # type: ignore[operator]
            ast.NotIn: lambda a, b: a not in b,  # type: ignore[operator]
        }
        return comparisons[type(op)](left, right)

    def _subscript(self, container: object, index: ast.expr, local: Mapping[str, object]) -> object:
        if isinstance(index, ast.Slice):
            bounds = [
                None if part is None else self.evaluate(part, local) for part in (index.lower, index.upper, index.step)
            ]
            if not all(bound is None or isinstance(bound, int) for bound in bounds):
                raise _NotStatic
            return container[slice(*bounds)]  # type: ignore[index]
        return container[self.evaluate(index, local)]  # type: ignore[index]

    def _formatted(self, part: ast.expr, local: Mapping[str, object]) -> str:
        if isinstance(part, ast.Constant) and isinstance(part.value, str):
            return part.value
        if isinstance(part, ast.FormattedValue) and part.format_spec is None:
            value = self.evaluate(part.value, local)
            return repr(_scalar(value)) if part.conversion == ord("r") else str(_scalar(value))
        raise _NotStatic

    def _comprehension(
        self, element: ast.expr, generators: list[ast.comprehension], local: Mapping[str, object]
    ) -> tuple[object, ...]:
        generator = generators[0]
        target = generator.target
        if len(generators) != 1 or not isinstance(target, ast.Name) or generator.is_async:
            raise _NotStatic
        results = []
        for item in self._sequence(self.evaluate(generator.iter, local)):
            scope = {**local, target.id: item}
            if all(self.evaluate(condition, scope) for condition in generator.ifs):
                results.append(self.evaluate(element, scope))
        return tuple(results)

    @staticmethod
    def _sequence(value: object) -> tuple[object, ...]:
        if isinstance(value, str | bytes | tuple):
            return tuple(value)
        if isinstance(value, dict):
            return tuple(value)
        raise _NotStatic

    def _call(self, node: ast.Call, local: Mapping[str, object]) -> object:
        if any(isinstance(argument, ast.Starred) for argument in node.args):
            raise _NotStatic
        if isinstance(node.func, ast.Attribute) and dotted_name(node.func, self.constants) not in _BYTES_DECODERS:
            owner_name = dotted_name(node.func.value, self.constants)
            if owner_name not in {"base64", "binascii", "codecs", "bytes"}:
                return self._method(node, local)
        callee = dotted_name(node.func, self.constants)
        if callee is None or any(keyword.arg is None for keyword in node.keywords):
            raise _NotStatic
        if callee == "map" and len(node.args) == 2 and not node.keywords:
            items = self._sequence(self.evaluate(node.args[1], local))
            return tuple(self._apply(node.args[0], item, local) for item in items)
        arguments = [self.evaluate(argument, local) for argument in node.args]
        keywords = {keyword.arg: self.evaluate(keyword.value, local) for keyword in node.keywords if keyword.arg}
        return self._builtin(callee, arguments, keywords)

    def _apply(self, function: ast.expr, item: object, local: Mapping[str, object]) -> object:
        if isinstance(function, ast.Lambda) and len(function.args.args) == 1:
            return self.evaluate(function.body, {**local, function.args.args[0].arg: item})
        callee = dotted_name(function, self.constants)
        if callee is None:
            raise _NotStatic
        return self._builtin(callee, [item], {})

    def _builtin(self, callee: str, arguments: list[object], keywords: dict[str, object]) -> object:
        if callee in _BYTES_DECODERS and len(arguments) == 1:
            data = arguments[0]
            return _BYTES_DECODERS[callee](data.encode() if isinstance(data, str) else data)  # type: ignore[arg-type]
        if callee == "codecs.decode" and len(arguments) >= 2 and arguments[1] in _CODECS:
            return codecs.decode(arguments[0], arguments[1])  # type: ignore[arg-type,call-overload]
        simple: dict[str, Callable[..., object]] = {
            "chr": chr,
            "ord": ord,
            "str": lambda *parts: str(*map(_scalar, parts)),
            "bool": bool,
            "len": len,
            "int": int,
            "float": float,
            "abs": abs,
            "list": tuple,
            "tuple": tuple,
            "reversed": lambda sequence: tuple(reversed(sequence)),
            "bytes": _bytes,
            "bytearray": _bytes,
            "dict": lambda *pairs, **named: dict(*pairs, **named),
        }
        if callee == "range":
            if not all(isinstance(argument, int) for argument in arguments):
                raise _NotStatic
            numbers = range(*arguments)  # type: ignore[arg-type,call-overload]
            if len(numbers) > MAX_SEQUENCE_LENGTH:
                raise _NotStatic
            return tuple(numbers)
        if callee not in simple or (keywords and callee != "dict"):
            raise _NotStatic
        return simple[callee](*arguments, **keywords)

    def _method(self, node: ast.Call, local: Mapping[str, object]) -> object:
        assert isinstance(node.func, ast.Attribute)
        receiver = self.evaluate(node.func.value, local)
        method = node.func.attr
        arguments = [self.evaluate(argument, local) for argument in node.args]
        if node.keywords and (method != "format" or any(keyword.arg is None for keyword in node.keywords)):
            raise _NotStatic
        keywords = {keyword.arg: self.evaluate(keyword.value, local) for keyword in node.keywords if keyword.arg}
        if isinstance(receiver, bytes) and method == "decode":
            return receiver.decode(*arguments)  # type: ignore[arg-type]
        if not isinstance(receiver, str):
            raise _NotStatic
        if method == "join" and len(arguments) == 1:
            pieces = self._sequence(arguments[0])
            if sum(len(piece) for piece in pieces if isinstance(piece, str)) > MAX_SEQUENCE_LENGTH:
                raise _NotStatic
            return receiver.join(pieces)  # type: ignore[arg-type]
        if method == "format":
            return self._format(receiver, arguments, keywords)
        replacement = arguments[1] if method == "replace" and len(arguments) >= 2 else ""
        if isinstance(replacement, str) and len(receiver) * (len(replacement) + 1) > MAX_SEQUENCE_LENGTH:
            raise _NotStatic
        if method not in _STRING_METHODS:
            raise _NotStatic
        result = _STRING_METHODS[method](receiver, *arguments)
        return tuple(result) if isinstance(result, list) else result

    @staticmethod
    def _format(template: str, arguments: list[object], keywords: dict[str, object]) -> str:
        # Format specs ("{:>999999999}") build huge strings and "{0.__class__}" walks attributes;
        # plain fields ("{}", "{0}", "{name}") are all that obfuscation needs.
        for _, field_name, spec, conversion in string.Formatter().parse(template):
            if field_name is not None and (spec or conversion or not _PLAIN_FIELD.fullmatch(field_name)):
                raise _NotStatic
        return template.format(*map(_scalar, arguments), **{key: _scalar(value) for key, value in keywords.items()})


def _bytes(*arguments: object) -> bytes:
    # bytes(10**9) would allocate a gigabyte of zeros.
    if arguments and isinstance(arguments[0], int) and arguments[0] > MAX_SEQUENCE_LENGTH:
        raise _NotStatic
    return bytes(bytearray(*arguments))  # type: ignore[arg-type]
