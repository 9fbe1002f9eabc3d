"""One contract, every task: each registered task (built-in or plugin), the folder task examples/tsp and the Python
task examples/knapsack_task.py declare what the model and the sandbox need, have a seed solution that is valid
and scores in the real sandbox, judge bad outputs strictly, keep their splits apart, and make the same instances
from the same seeds every time.

What is particular to one task (its generator, its hand-checked scores, the reward hacks it defeats) stays in
its own tests/test_task_*.py.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import runpy
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import numpy as np
import pytest

from conftest import TSP_EXAMPLE
from selftaught.sandbox.launcher import Launcher
from selftaught.tasks.base import TEST, VALIDATION, Instance, InstanceScore, Task, Unrepresentable
from selftaught.tasks.evaluation import SolutionEvaluator
from selftaught.tasks.registry import get_task, task_names
from selftaught.tasks.user_task import load_task_folder
from test_hostile_outputs import GENERAL, HUGE, _describe, _sized

KNAPSACK_EXAMPLE = TSP_EXAMPLE.parent / "knapsack_task.py"
#: Instances per split made again by fresh objects (all of them take seconds for some tasks).
FEW = 3

#: Outputs no task can take for an answer: each must be judged invalid, not merely not raise.
NO_ANSWER: list[Any] = [None, float("nan"), float("inf"), HUGE, True, "", {}, [[[[[]]]]], Unrepresentable("function")]


@cache
def _knapsack_class() -> type[Task]:
    task_class: type[Task] = runpy.run_path(str(KNAPSACK_EXAMPLE), run_name="knapsack_example")["Knapsack"]
    return task_class


#: Each task under test by id, as a function that makes a fresh object of it.
TASKS: dict[str, Callable[[], Task]] = {
    **{name: type(get_task(name)) for name in task_names()},
    "examples/tsp": lambda: load_task_folder(TSP_EXAMPLE),
    "examples/knapsack_task.py": lambda: _knapsack_class()(),
}


@pytest.fixture(params=sorted(TASKS))
def make(request: pytest.FixtureRequest) -> Callable[[], Task]:
    return TASKS[request.param]


@pytest.fixture(scope="module")
def evaluator() -> Iterator[SolutionEvaluator]:
    launcher = Launcher()
    yield SolutionEvaluator(launcher)
    launcher.close()


def test_declares_what_the_model_and_the_sandbox_need(make: Callable[[], Task]) -> None:
    task = make()
    assert isinstance(task.name, str) and task.name
    assert isinstance(task.description, str) and task.description.strip()
    assert task.entry_point.isidentifier() and task.entry_point in task.description
    assert math.isfinite(task.time_limit_seconds) and 0 < task.time_limit_seconds <= 600
    defined = {node.name for node in ast.walk(ast.parse(task.seed_solution)) if isinstance(node, ast.FunctionDef)}
    assert task.entry_point in defined


@pytest.mark.slow
def test_the_seed_solution_is_valid_and_scores(make: Callable[[], Task], evaluator: SolutionEvaluator) -> None:
    task = make()
    result = evaluator.evaluate(task, task.seed_solution, VALIDATION, seed=0)
    # Timeouts are left out: a loaded machine may stretch a tight per-instance limit (three_sat's is 0.1 s).
    assert result.failure is None and result.invalid == result.errors == result.scorer_errors == 0, result
    assert 0.0 < result.score <= 1.0 and result.instances == task.splits[VALIDATION].count, result


@pytest.mark.slow
def test_the_validation_and_test_splits_exist_differ_and_do_not_overlap(make: Callable[[], Task]) -> None:
    task = make()
    assert {VALIDATION, TEST} <= set(task.splits)
    for name in (VALIDATION, TEST):
        split = task.splits[name]
        assert split.name == name and split.count >= 1
        assert [instance.seed for instance in task.instances(name)] == list(split.seeds())
    assert not set(task.splits[VALIDATION].seeds()) & set(task.splits[TEST].seeds())
    validation = {fingerprint(instance.arguments) for instance in task.instances(VALIDATION)}
    assert not any(fingerprint(instance.arguments) in validation for instance in task.instances(TEST))


@pytest.mark.slow
def test_the_same_seeds_make_the_same_instances_in_fresh_objects(make: Callable[[], Task]) -> None:
    first, second = make(), make()
    for split in (VALIDATION, TEST):
        seeds = list(first.splits[split].seeds())[:FEW]
        made = [instance_fingerprint(first.make_instance(seed)) for seed in seeds]
        assert made == [instance_fingerprint(second.make_instance(seed)) for seed in seeds]


@pytest.mark.slow
def test_bad_outputs_are_judged_strictly_and_never_raise(make: Callable[[], Task]) -> None:
    task = make()
    instance = task.instances(VALIDATION)[0]
    failures = []
    for output in GENERAL + [output for n in output_lengths(instance) for output in _sized(n) + _sized(n + 1)]:
        try:
            judged = task.score(instance, output)
        except Exception as error:  # what the host would count as a bug in the task
            failures.append(f"{_describe(output)} raised {type(error).__name__}: {error}")
            continue
        assert isinstance(judged, InstanceScore)
        assert math.isfinite(judged.score) and 0.0 <= judged.score <= 1.0
        if not judged.valid:
            assert judged.score == 0.0 and isinstance(judged.problem, str) and judged.problem
    for output in NO_ANSWER:
        judged = task.score(instance, output)
        if judged.valid:
            failures.append(f"{_describe(output)} was taken for an answer, scoring {judged.score}")
    assert not failures, "\n".join(failures)


def output_lengths(instance: Instance) -> set[int]:
    """The lengths an output may need to have: the length of any argument, or a count given as an argument (tasks
    differ in which), so that outputs of the right length but the wrong contents are tried on every task."""
    lengths = set()
    for argument in instance.arguments:
        if isinstance(argument, (list, tuple, str, np.ndarray)) and len(argument) > 0:
            lengths.add(len(argument))
        elif isinstance(argument, int) and not isinstance(argument, bool) and 0 < argument <= 10_000:
            lengths.add(argument)
    return lengths or {1}


def fingerprint(value: Any) -> Any:
    """A value as plain data that compares by content: arrays by dtype, shape and bytes, dataclasses by fields."""
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, np.generic):
        return ("numpy", value.dtype.str, value.tobytes())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, *(fingerprint(getattr(value, field.name)) for field in dataclasses.fields(value)))
    if isinstance(value, dict):
        return ("dict", *((fingerprint(key), fingerprint(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, *(fingerprint(item) for item in value))
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    return (type(value).__name__, repr(value))


def instance_fingerprint(instance: Instance) -> Any:
    return (instance.seed, fingerprint(instance.arguments), fingerprint(instance.answer))
