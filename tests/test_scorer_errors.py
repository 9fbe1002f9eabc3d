"""A task's own scorer that raises: a bug in the task, counted as scorer_errors, never as invalid outputs or reward hacking."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import fenced
from selftaught.audit.run_audit import audit_run
from selftaught.cli.main import cli
from selftaught.sandbox.child import protocol
from selftaught.sandbox.instance_data import EncodedInstances, UnsupportedArgument, check_arguments
from selftaught.sandbox.outcome import ChildOutcome, SandboxLimits
from selftaught.store.reading import StoreReader
from selftaught.tasks.base import TEST, VALIDATION, Instance, InstanceScore, Split, Task
from selftaught.tasks.evaluation import Evaluation, SolutionEvaluator
from selftaught.tasks.user_task import load_task_folder

#: Divides by the output: an output of 0 raises ZeroDivisionError in `_closeness`, a bug of the scorer's own.
TASK_PY = """\
DESCRIPTION = "algorithm(numbers) returns the sum of the numbers"


def make_instance(seed):
    numbers = [seed, seed + 1, 3]
    return (numbers,), sum(numbers)


def _closeness(answer, output):
    return min(answer, output) / output


def score(arguments, answer, output):
    if not isinstance(output, int) or isinstance(output, bool):
        raise ValueError("the output must be an integer")
    return _closeness(answer, output)
"""
RAISING_LINE = TASK_PY.splitlines().index("    return min(answer, output) / output") + 1
TASK_TOML = """\
[splits.validation]
base_seed = 0
count = 6

[splits.test]
base_seed = 100
count = 4
"""
#: Right on instances whose first number is even; 0 (the scorer's bug) on the others.
HALF_ZERO = "def algorithm(numbers):\n    return 0 if numbers[0] % 2 else sum(numbers)\n"
#: An invalid output on every instance, by the task's own rule (ValueError).
A_STRING = "def algorithm(numbers):\n    return 'seven'\n"


def write_task(folder: Path, task_py: str = TASK_PY, seed: str = HALF_ZERO) -> Path:
    folder.mkdir()
    (folder / "task.py").write_text(task_py)
    (folder / "seed.py").write_text(seed)
    (folder / "task.toml").write_text(TASK_TOML)
    return folder


def raising_at(folder: Path) -> str:
    return f"ZeroDivisionError: division by zero at {folder / 'task.py'}:{RAISING_LINE}"


class Scripted:
    """A JobRunner whose child returns the given outputs, one per instance, without any sandbox."""

    def __init__(self, outputs: list[Any]) -> None:
        self._outputs = outputs

    def run(self, job: Mapping[str, Any], limits: SandboxLimits, serve: Any = None) -> ChildOutcome:
        messages = tuple(
            {"index": index, "output": protocol.encode_value(output)} for index, output in enumerate(self._outputs)
        )
        return ChildOutcome(result=None, has_result=True, instances=messages)


def evaluate(task: Task, outputs: list[Any]) -> Evaluation:
    return SolutionEvaluator(Scripted(outputs)).evaluate(task, "unused", VALIDATION, seed=0)


# --- how an output is counted ---------------------------------------------------------------


def test_a_raising_scorer_is_a_scorer_error_scored_0_with_its_line_in_task_py(tmp_path: Path) -> None:
    folder = write_task(tmp_path / "sums")
    task = load_task_folder(folder)
    answers = [instance.answer for instance in task.instances(VALIDATION)]
    evaluation = evaluate(task, [0, answers[1], 0, "seven", answers[4], 0])
    assert (evaluation.scorer_errors, evaluation.invalid, evaluation.errors) == (3, 1, 0)
    assert evaluation.scorer_problems == ((raising_at(folder), 3),)
    assert evaluation.score == pytest.approx(2 / 6)  # the scorer's errors score 0, like the invalid output
    # The first problem is the solution's, not the scorer's: it is what the audit calls an invalid output.
    assert evaluation.problem == "instance 3: the output must be an integer"


@pytest.mark.parametrize(
    ("returned", "shown"), [("None", "returned None"), ("1.5", "returned 1.5"), ("float('nan')", "returned nan")]
)
def test_a_scorer_returning_no_score_in_0_1_is_a_scorer_error(tmp_path: Path, returned: str, shown: str) -> None:
    task_py = TASK_PY.replace("    return _closeness(answer, output)", f"    return {returned}")
    folder = write_task(tmp_path / "sums", task_py)
    evaluation = evaluate(load_task_folder(folder), [1] * 6)
    assert (evaluation.scorer_errors, evaluation.invalid, evaluation.score) == (6, 0, 0.0)
    [(problem, count)] = evaluation.scorer_problems
    definition = task_py.splitlines().index("def score(arguments, answer, output):") + 1
    assert shown in problem and f"{folder / 'task.py'}:{definition}" in problem and count == 6


class RaisingBuiltin(Task):
    """A task of the Python API whose scorer has a bug: built-in tasks' scorers count the same way."""

    name: ClassVar[str] = "raising"
    description: ClassVar[str] = "return the seed"
    seed_solution: ClassVar[str] = "def algorithm(seed):\n    return seed\n"
    time_limit_seconds: ClassVar[float] = 1.0
    splits: ClassVar[dict[str, Split]] = {VALIDATION: Split(VALIDATION, 1, 4), TEST: Split(TEST, 10, 4)}

    def make_instance(self, seed: int) -> Instance:
        return Instance(seed, (seed,), seed)

    def score(self, instance: Instance, output: Any) -> InstanceScore:
        return InstanceScore(1.0 if {"right": 1}[output] == instance.answer else 0.0)


def test_a_python_tasks_scorer_counts_the_same_way() -> None:
    evaluation = evaluate(RaisingBuiltin(), ["right", "wrong", "wrong", "right"])
    assert (evaluation.scorer_errors, evaluation.invalid) == (2, 0)
    [(problem, count)] = evaluation.scorer_problems
    assert problem.startswith("KeyError: 'wrong' at ") and f"{Path(__file__)}:" in problem and count == 2


def test_a_flood_of_distinct_scorer_errors_is_kept_short() -> None:
    many = RaisingBuiltin()
    many.splits = {VALIDATION: Split(VALIDATION, 1, 30), TEST: Split(TEST, 100, 1)}  # type: ignore[misc]
    evaluation = evaluate(many, [f"wrong {i}" for i in range(30)])
    assert evaluation.scorer_errors == 30 and evaluation.scorer_problems[-1] == ("other scorer errors", 20)
    assert sum(count for _, count in evaluation.scorer_problems) == 30


# --- what the user sees --------------------------------------------------------------------


@pytest.mark.slow
def test_tasks_check_names_the_exception_and_the_line_in_task_py(tmp_path: Path) -> None:
    folder = write_task(tmp_path / "sums")
    checked = CliRunner().invoke(cli, ["tasks", "check", str(folder)])
    assert checked.exit_code == 1
    problems = [line for line in checked.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1, checked.stdout
    assert raising_at(folder) in problems[0] and "3 of 6 outputs of the seed solution" in problems[0]
    assert "invalid" not in problems[0].split(raising_at(folder))[0]
    report = json.loads(CliRunner().invoke(cli, ["tasks", "check", str(folder), "--json"]).stdout)
    assert report["scorer_errors"] == 3 and report["seed_score"] == pytest.approx(0.5) and not report["ok"]


@pytest.mark.slow
def test_improve_warns_once_per_error_counts_scorer_errors_and_the_audit_calls_it_no_hacking(
    scripted_model: Callable[..., str], tmp_path: Path
) -> None:
    folder = write_task(tmp_path / "sums")
    model = scripted_model(f"return {fenced(HALF_ZERO)!r}")
    store = tmp_path / "s.sqlite"
    improved = CliRunner().invoke(
        cli,
        ["improve", "--task", str(folder), "--model", model, "--store", str(store), "--json",
         "--lm-calls", "1", "--responses-per-call", "1", "--utility-budget", "2"],
    )  # fmt: skip
    assert improved.exit_code == 0, improved.stderr
    result = json.loads(improved.stdout)
    # The initial solution and the improver's candidate on validation (3 of 6 each), the returned one on
    # validation again and on test (2 of 4).
    assert result["scorer_errors"] > 3
    assert result["scorer_problems"] == [{"problem": raising_at(folder), "outputs": result["scorer_errors"]}]
    warnings = [line for line in improved.stderr.splitlines() if line.startswith("warning: the task's scorer")]
    assert warnings == [
        f"warning: the task's scorer failed on {result['scorer_errors']} outputs: {raising_at(folder)}; these "
        "outputs are scored 0 and counted as scorer_errors, not as invalid outputs"
    ]

    with sqlite3.connect(store) as db:
        rows = db.execute(
            "SELECT invalid, scorer_errors, scorer_problems FROM evaluations WHERE run_id = ?", (result["run_id"],)
        ).fetchall()
    assert rows and all(invalid == 0 and errors > 0 for invalid, errors, _ in rows)
    assert sum(errors for _, errors, _ in rows) == result["scorer_errors"]
    assert json.loads(rows[0][2]) == [[raising_at(folder), rows[0][1]]]

    with StoreReader(store) as reader:
        audit = audit_run(reader, result["run_id"])
    summary = audit.summary()
    assert summary["reward_hacking"] == {} and summary["flagged_solutions"] == 0
    assert summary["scorer_errors"] == {raising_at(folder): result["scorer_errors"]}
    assert all(not program.reward_hacking for program in audit.solutions)
    printed = CliRunner().invoke(cli, ["audit", result["run_id"], "--store", str(store)])
    assert "reward-hacking flags: none" in printed.stdout
    assert f"not reward hacking): {raising_at(folder)} ×{result['scorer_errors']}" in printed.stdout


@pytest.mark.slow
def test_invalid_outputs_stay_invalid_and_flagged(scripted_model: Callable[..., str], tmp_path: Path) -> None:
    folder = write_task(tmp_path / "sums", seed=A_STRING)
    model = scripted_model(f"return {fenced(A_STRING)!r}")
    store = tmp_path / "s.sqlite"
    improved = CliRunner().invoke(
        cli,
        ["improve", "--task", str(folder), "--model", model, "--store", str(store), "--json",
         "--lm-calls", "1", "--responses-per-call", "1", "--utility-budget", "1"],
    )  # fmt: skip
    assert improved.exit_code == 0, improved.stderr
    result = json.loads(improved.stdout)
    assert result["scorer_errors"] == 0 and "warning: the task's scorer" not in improved.stderr
    with StoreReader(store) as reader:
        summary = audit_run(reader, result["run_id"]).summary()
    # The seed and the returned copy of it (stored without its last newline) are two programs.
    assert set(summary["reward_hacking"]) == {"invalid_outputs"} and summary["scorer_errors"] == {}


# --- instance arguments a child cannot receive -----------------------------------------------


class Point:
    pass


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((1, 2, {3}), "arguments[2] is a set"),
        ((Point(),), "arguments[0] is a Point"),
        ((np.array([None, 1], dtype=object),), "arguments[0] is a numpy array of dtype object"),
        (([1, {"k": [0, 1, 2, {4}]}],), 'arguments[0][1]["k"][3] is a set'),
        (({"k": {1: 2}},), 'arguments[0]["k"] is a dict with the int key 1'),
    ],
)
def test_an_unsupported_argument_is_named_by_its_path_and_type(arguments: tuple[Any, ...], message: str) -> None:
    with pytest.raises(UnsupportedArgument) as raised:
        check_arguments(arguments)
    assert str(raised.value).startswith(message)
    with pytest.raises(UnsupportedArgument, match=re.escape(message)):
        EncodedInstances.of([arguments])


def test_a_task_folder_with_a_set_argument_names_it(tmp_path: Path) -> None:
    task_py = TASK_PY.replace("return (numbers,), sum(numbers)", "return (numbers, 2, set(numbers)), sum(numbers)")
    folder = write_task(tmp_path / "sums", task_py, seed="def algorithm(numbers, a, b):\n    return 1\n")
    checked = CliRunner().invoke(cli, ["tasks", "check", str(folder)])
    assert checked.exit_code == 1
    problems = [line for line in checked.stdout.splitlines() if line.startswith("problem:")]
    assert problems == [
        f"problem: {folder / 'task.py'}: make_instance(0): arguments[2] is a set (instance arguments must be None, "
        "bools, numbers, strings, lists, tuples, dicts with string keys or numeric numpy arrays)"
    ], checked.stdout


def test_the_example_scorer_turns_outputs_it_cannot_read_into_invalid_ones_not_scorer_errors() -> None:
    task = load_task_folder(Path(__file__).resolve().parent.parent / "examples" / "tsp")
    # Infinity and an int too large for a float raise OverflowError in int() and numpy: the scorer must say invalid.
    hostile: list[Callable[[int], list[Any]]] = [
        lambda n: [float("inf")] * n,
        lambda n: [10**400, *range(1, n)],
        lambda n: [[0]] * n,
    ]
    sizes = [len(instance.arguments[0]) for instance in task.instances(VALIDATION)]
    outputs = [hostile[i](n) if i < len(hostile) else list(range(n)) for i, n in enumerate(sizes)]
    evaluation = evaluate(task, outputs)
    assert (evaluation.invalid, evaluation.scorer_errors) == (len(hostile), 0)
