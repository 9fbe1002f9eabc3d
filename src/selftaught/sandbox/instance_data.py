"""Task instances in the form a child receives them: one message per instance, whose arrays travel as raw bytes.

Encoded once per task and split on the host. A child gets its instances only once its solution
has loaded, and reads each one when it starts it, so the instances it has not reached yet are in
no memory of its process. Arrays are narrowed on the wire to the smallest integer type that holds
their values (a parity matrix of int64 zeros and ones travels as bytes) and restored to their own
dtype in the child.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from selftaught.sandbox.child import protocol

#: Integer types tried, smallest first, for an integer array's bytes on the wire.
NARROW_INTEGERS = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32)


class UnsupportedArgument(TypeError):
    """An instance argument that cannot be sent to a child; the message names it and its type."""


@dataclass(frozen=True)
class EncodedInstances:
    """Each instance's `instance` message, framed."""

    frames: tuple[bytes, ...]

    @classmethod
    def of(cls, instances: Sequence[Sequence[Any]]) -> EncodedInstances:
        frames = []
        for index, instance in enumerate(instances):
            tail = bytearray()
            arguments = [_encode(argument, tail, f"arguments[{i}]") for i, argument in enumerate(instance)]
            frames.append(
                protocol.frame({"kind": protocol.INSTANCE, "index": index, "arguments": arguments}, bytes(tail))
            )
        return cls(tuple(frames))

    def __len__(self) -> int:
        return len(self.frames)


def _encode(value: Any, tail: bytearray, path: str) -> Any:
    """The wire form of one argument: JSON data, arrays as references into `tail`."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise UnsupportedArgument(f"{path} is a numpy array of dtype {value.dtype}; only numbers can be sent")
        wire = _narrowest(value)
        spec = {"dtype": value.dtype.str, "shape": list(value.shape), "wire": wire.dtype.str, "offset": len(tail)}
        tail += wire.tobytes()
        return {protocol.NDARRAY_TAG: spec}
    if isinstance(value, (list, tuple)):
        return [_encode(item, tail, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        if protocol.NDARRAY_TAG in value:
            raise UnsupportedArgument(f"{path} is a dict with the reserved key {protocol.NDARRAY_TAG!r}")
        return {key: _encode(item, tail, f"{path}[{key!r}]") for key, item in value.items()}
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    kind = "a dict with keys that are not strings" if isinstance(value, dict) else f"a {type(value).__name__}"
    raise UnsupportedArgument(
        f"{path} is {kind}; instance arguments must be None, bools, numbers, strings, lists, tuples, "
        "dicts with string keys or numeric numpy arrays"
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
