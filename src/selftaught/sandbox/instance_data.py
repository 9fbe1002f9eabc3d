"""Task instances in the form a child receives them: JSON arguments whose arrays travel as raw bytes.

Encoded once per task and split on the host, and sent to a child only once its solution has loaded.
Arrays are narrowed on the wire to the smallest integer type that holds their values (a parity
matrix of int64 zeros and ones travels as bytes) and restored to their own dtype in the child,
which decodes each instance only when it starts it.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from selftaught.sandbox.child import protocol

#: Integer types tried, smallest first, for an integer array's bytes on the wire.
NARROW_INTEGERS = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32)


class UnsupportedArgument(TypeError):
    """An instance argument that cannot be sent to a child; the message names it and its type."""


@dataclass(frozen=True)
class EncodedInstances:
    """The arguments of a list of instances, each instance's arrays in its own slice of one byte string."""

    arguments: tuple[Any, ...]
    #: Where each instance's bytes start in `tail`.
    starts: tuple[int, ...]
    tail: bytes
    #: Framed messages by first instance; almost always only the one from 0, made once.
    _frames: dict[int, bytes] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, instances: Sequence[Sequence[Any]]) -> EncodedInstances:
        arguments, starts, tail = [], [], bytearray()
        for instance in instances:
            starts.append(len(tail))
            own = bytearray()
            arguments.append([_encode(argument, own, f"arguments[{i}]") for i, argument in enumerate(instance)])
            tail += own
        return cls(tuple(arguments), tuple(starts), bytes(tail))

    def __len__(self) -> int:
        return len(self.arguments)

    def frame(self, first: int) -> bytes:
        """The `instances` message for instances `first`, `first + 1`, ..., framed."""
        if first not in self._frames:
            self._frames[first] = self._framed(first)
        return self._frames[first]

    def _framed(self, first: int) -> bytes:
        base = self.starts[first] if first < len(self.starts) else len(self.tail)
        message = {
            "kind": protocol.INSTANCES,
            "first": first,
            "arguments": list(self.arguments[first:]),
            "tails": [start - base for start in self.starts[first:]],
        }
        return protocol.frame(message, self.tail[base:])


def check_arguments(arguments: Sequence[Any]) -> None:
    """Raises UnsupportedArgument for the first argument that cannot be sent to a child, naming where it sits."""
    scratch = bytearray()
    for i, argument in enumerate(arguments):
        _encode(argument, scratch, f"arguments[{i}]")


def _encode(value: Any, tail: bytearray, path: str) -> Any:
    """The wire form of one argument: JSON data, arrays as references into `tail`."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise UnsupportedArgument(
                f"{path} is a numpy array of dtype {value.dtype} (only numeric arrays can be sent)"
            )
        wire = _narrowest(value)
        spec = {
            "dtype": value.dtype.str,
            "shape": list(value.shape),
            "wire": wire.dtype.str,
            "offset": len(tail),
            "count": int(value.size),
        }
        tail += wire.tobytes()
        return {protocol.NDARRAY_TAG: spec}
    if isinstance(value, (list, tuple)):
        return [_encode(item, tail, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        if protocol.NDARRAY_TAG in value:
            raise UnsupportedArgument(f"{path} is a dict with the reserved key {protocol.NDARRAY_TAG!r}")
        # Keys in double quotes, which Python and JSON read alike: arguments[0]["k"][3].
        return {
            key: _encode(item, tail, f"{path}[{json.dumps(key, ensure_ascii=False)}]") for key, item in value.items()
        }
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    kind = f"a {type(value).__name__}"
    if isinstance(value, dict):
        key = next(key for key in value if not isinstance(key, str))
        kind = f"a dict with the {type(key).__name__} key {reprlib.repr(key)}"
    # No semicolon in the message: a task folder's problems are listed split at semicolons.
    raise UnsupportedArgument(
        f"{path} is {kind} (instance arguments must be None, bools, numbers, strings, lists, tuples, "
        "dicts with string keys or numeric numpy arrays)"
    )


def _narrowest(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind not in "iu" or array.size == 0 or array.dtype.itemsize == 1:
        return np.ascontiguousarray(array)
    low, high = int(array.min()), int(array.max())
    for candidate in NARROW_INTEGERS:
        limits = np.iinfo(candidate)
        if np.dtype(candidate).itemsize < array.dtype.itemsize and limits.min <= low and high <= limits.max:
            return array.astype(candidate)
    return np.ascontiguousarray(array)
