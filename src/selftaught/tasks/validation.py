"""Strict checks of solution outputs, shared by tasks: they return the clean value or a one-line problem."""

from __future__ import annotations

from typing import Any

import numpy as np

from selftaught.tasks.base import Unrepresentable


def binary_labels(output: Any, expected_length: int, what: str = "predictions") -> np.ndarray | str:
    """`output` as a 1-D int array of exactly `expected_length` labels in {0, 1}, or the problem with it.

    `what` names the values in the problem ("predictions", "sides", ...).

    Accepts a list/tuple of bools, ints or floats equal to 0 or 1, or a 1-D numeric array;
    refuses other shapes (a (n, 1) column broadcasts into n*n comparisons), NaN, other values.
    """
    if isinstance(output, np.ndarray):
        if output.dtype.kind not in "biuf":
            return f"{what} have dtype {output.dtype}, expected numbers"
        if output.shape != (expected_length,):
            return f"{what} have shape {output.shape}, expected ({expected_length},)"
        values = output
    elif isinstance(output, (list, tuple)):
        problem = number_list_problem(output, expected_length, what)
        converted = float_array(output, f"{what} must all be 0 or 1") if problem is None else problem
        if isinstance(converted, str):
            return converted
        values = converted
    else:
        return f"{what} are {_type_name(output)}, expected a list or 1-D array"
    # Array methods rather than np.all: the host judges every output, and the wrappers cost more than the check.
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        return f"{what} contain NaN or infinity"
    if not ((values == 0) | (values == 1)).all():
        return f"{what} must all be 0 or 1"
    return values.astype(np.int64)


def number_list_problem(
    items: list[Any] | tuple[Any, ...], length: int, what: str, numbers: tuple[type, ...] = (int, float)
) -> str | None:
    """What is wrong with a list or tuple that should hold exactly `length` plain numbers, or None.

    `what` names the items in the problem; `numbers` are the types that count as numbers (bool is an int).
    """
    if len(items) != length:
        return f"{len(items)} {what}, expected {length}"
    if not all(isinstance(item, numbers) for item in items):
        return f"{what} must be numbers, not nested sequences or other objects"
    return None


def float_array(items: list[Any] | tuple[Any, ...], problem: str) -> np.ndarray | str:
    """Items already checked to be numbers as a 1-D float array, or `problem` when one has no float value.

    A Python int beyond float range (10**400) makes the conversion raise: that is the output's fault,
    and must never reach the host as an exception, which it would count as a bug in the task.
    """
    try:
        return np.array(items, dtype=float)
    except (OverflowError, TypeError, ValueError):
        return problem


def _type_name(output: Any) -> str:
    if isinstance(output, Unrepresentable):
        return f"an object of type {output.type_name}"
    return "None" if output is None else f"of type {type(output).__name__}"
