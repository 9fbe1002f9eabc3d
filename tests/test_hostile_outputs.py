"""Outputs no scorer may raise on (a raise would blame the task, not the solution), and huge integers.

tests/test_task_conformance.py tries these outputs on every task, built-in, plugin and example.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pytest

from selftaught.tasks.base import VALIDATION, Instance, Task, Unrepresentable
from selftaught.tasks.registry import get_task

HUGE = 10**400  # beyond float range: converting it raises OverflowError


def _sized(n: int) -> list[Any]:
    """Outputs of the expected length whose items are not what any task accepts."""
    return [
        [HUGE] * n,
        [-HUGE] * n,
        [0] * (n - 1) + [HUGE],
        [2**64] * n,
        [2**53 + 1] * n,
        [float("inf")] * n,
        [float("-inf")] * n,
        [float("nan")] * n,
        [0.5] * n,
        [[0]] * n,
        [[0, 1]] * n,
        [[HUGE]] * n,
        ["0"] * n,
        [{}] * n,
        [None] * n,
        [Unrepresentable("Cheater")] * n,
        [True] * n,
        (0,) * n,
        [[0, 1], [0]] + [0] * (n - 2),
        "A" * n,
        "\u2028" * n,
        np.full(n, np.nan),
        np.full(n, np.inf),
        np.full(n, 1e308),
        np.full(n, 2**63 - 1, dtype=np.int64),
        np.full(n, 2**64 - 1, dtype=np.uint64),
        np.zeros(n, dtype=np.float16),
        np.zeros((n, 1)),
        np.zeros((1, n)),
        np.zeros((n, n)),
        np.zeros(n, dtype=bool),
        np.arange(n, dtype=">i8"),
        np.arange(n)[::-1].astype(np.float32),
    ]


GENERAL: list[Any] = [
    None,
    HUGE,
    float("nan"),
    True,
    "",
    "01",
    {},
    {"0": 1},
    [],
    [HUGE],
    [[[[[]]]]],
    [0] * 1_000_000,
    ["A"] * 1_000_000,
    "A" * 1_000_000,
    np.zeros(0),
    np.zeros(()),
    np.zeros(1_000_000),
    Unrepresentable("numpy.ndarray"),
]


@cache
def _first_instance(name: str) -> tuple[Task, Instance]:
    task = get_task(name)
    return task, task.instances(VALIDATION)[0]


def _expected_length(instance: Instance) -> int:
    """The length an output must have: tasks differ in where it lies, so every candidate is tried."""
    arguments = instance.arguments
    if isinstance(arguments[0], int):  # three_sat: (n, clauses)
        return arguments[0]
    if isinstance(arguments[0], str):  # str_grid_dist: (t, dist)
        return len(arguments[0])
    return len(arguments[-1])  # parity: test samples; maxcut: the weights; MQAP: a 15 x 15 matrix


@pytest.mark.parametrize("name", ["parity_noise", "parity_noiseless", "maxcut", "three_sat"])
def test_integers_beyond_float_range_are_invalid_outputs(name: str) -> None:
    task, instance = _first_instance(name)
    judged = task.score(instance, [HUGE] * _expected_length(instance))
    assert not judged.valid and judged.score == 0.0
    assert judged.problem is not None and "0 or 1" in judged.problem


def _describe(output: Any) -> str:
    if isinstance(output, np.ndarray):
        return f"ndarray(shape={output.shape}, dtype={output.dtype})"
    text = repr(output)
    return text if len(text) <= 80 else f"{text[:77]}..."
