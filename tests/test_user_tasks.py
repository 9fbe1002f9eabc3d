"""The user's own tasks: a folder from the CLI, a Task object from Python, and clear messages for broken folders."""

from __future__ import annotations

import json
import py_compile
import shutil
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import NEAREST_NEIGHBOUR, TSP_EXAMPLE, fenced
from selftaught import api
from selftaught.api import RunOptions
from selftaught.cli.main import cli
from selftaught.tasks.base import TEST, VALIDATION, Instance, InstanceScore, Split, Task
from selftaught.tasks.folder_identity import task_folder_identity
from selftaught.tasks.user_task import load_task_folder


@pytest.mark.slow
def test_the_example_task_checks_and_improves(scripted_model: Callable[..., str], tmp_path: Path) -> None:
    checked = CliRunner().invoke(cli, ["tasks", "check", str(TSP_EXAMPLE), "--json"])
    assert checked.exit_code == 0, checked.stdout
    report = json.loads(checked.stdout)
    assert report["ok"] and 0.0 < report["seed_score"] < 0.8
    model = scripted_model(f"return {fenced(NEAREST_NEIGHBOUR)!r}")
    improved = CliRunner().invoke(
        cli,
        ["improve", "--task", str(TSP_EXAMPLE), "--model", model, "--store", str(tmp_path / "s.sqlite"), "--json",
         "--lm-calls", "1", "--responses-per-call", "2", "--utility-budget", "3"],
    )  # fmt: skip
    assert improved.exit_code == 0, improved.stderr
    result = json.loads(improved.stdout)
    assert result["utility_val"] == 1.0 and result["initial_utility_val"] < 0.8


class Echo(Task):
    name: ClassVar[str] = "echo"
    description: ClassVar[str] = "return the seed you are given"
    seed_solution: ClassVar[str] = "def algorithm(seed):\n    return 0\n"
    time_limit_seconds: ClassVar[float] = 1.0
    splits: ClassVar[dict[str, Split]] = {VALIDATION: Split(VALIDATION, 1, 3), TEST: Split(TEST, 10, 3)}

    def make_instance(self, seed: int) -> Instance:
        return Instance(seed, (seed,), seed)

    def score(self, instance: Instance, output: Any) -> InstanceScore:
        return InstanceScore(1.0 if output == instance.answer else 0.0)


class NumpyEcho(Echo):
    """Scores with numpy scalars, as a scorer written with numpy often does."""

    def score(self, instance: Instance, output: Any) -> InstanceScore:
        return InstanceScore(np.mean(np.array([output]) == instance.answer))


@pytest.mark.slow
@pytest.mark.parametrize("task", [Echo(), NumpyEcho()], ids=["python_scores", "numpy_scores"])
def test_a_task_object_from_python(
    task: Task, scripted_model: Callable[..., str], options_for: Callable[..., RunOptions]
) -> None:
    echo_solution = "def algorithm(seed):\n    return seed\n"
    model = scripted_model(f"return {fenced(echo_solution)!r}")
    result = api.improve(replace(options_for(model), task=task))
    assert result.initial_utility_val == 0.0 and result.utility_val == 1.0 and result.utility_test == 1.0
    # Plain floats whatever the scorer returns: comparisons of numpy scalars give numpy bools, which JSON refuses.
    assert {type(result.initial_utility_val), type(result.utility_val), type(result.utility_test)} == {float}


BREAKAGES = {
    "no_seed": (lambda folder: (folder / "seed.py").unlink(), "seed.py: missing"),
    "seed_syntax": (lambda folder: (folder / "seed.py").write_text("def algorithm(:\n"), "seed.py: syntax error"),
    "seed_entry": (lambda folder: (folder / "seed.py").write_text("def solve(c):\n    return c\n"), "defines no function algorithm()"),
    "no_task": (lambda folder: (folder / "task.py").unlink(), "task.py: missing"),
    "task_raises": (lambda folder: (folder / "task.py").write_text("raise RuntimeError('oops')\n"), "task.py: failed to load: RuntimeError: oops"),
    "no_score": (
        lambda folder: (folder / "task.py").write_text("DESCRIPTION = 'd'\ndef make_instance(seed):\n    return (1,), 1\n"),
        "task.py: define a function score()",
    ),
    "bad_toml": (lambda folder: (folder / "task.toml").write_text("time_limit = 3\n"), "task.toml: unknown settings time_limit"),
    "bad_instance": (
        lambda folder: (folder / "task.py").write_text(
            "DESCRIPTION = 'd'\ndef make_instance(seed):\n    return [1]\ndef score(a, b, c):\n    return 1.0\n"
        ),
        "make_instance must return (arguments tuple, answer)",
    ),
    "set_argument": (
        lambda folder: (folder / "task.py").write_text(
            "DESCRIPTION = 'd'\ndef make_instance(seed):\n    return (1, {seed}), 1\ndef score(a, b, c):\n    return 1.0\n"
        ),
        "make_instance(100): arguments[1] is a set",
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_folder_gets_clear_messages(breakage: str, tmp_path: Path) -> None:
    folder = tmp_path / "my_task"
    shutil.copytree(TSP_EXAMPLE, folder)
    damage, message = BREAKAGES[breakage]
    damage(folder)
    checked = CliRunner().invoke(cli, ["tasks", "check", str(folder)])
    assert checked.exit_code == 1
    problems = [line for line in checked.stdout.splitlines() if line.startswith("problem:")]
    assert problems and any(message in line and str(folder) in line for line in problems), checked.stdout
    assert "Traceback" not in checked.stdout
    improve = CliRunner().invoke(cli, ["improve", "--task", str(folder), "--store", str(tmp_path / "s.sqlite")])
    assert improve.exit_code == 2 and "error:" in improve.stderr


def test_a_planted_pyc_never_runs_instead_of_task_py(tmp_path: Path) -> None:
    """A folder's identity leaves `__pycache__` out: the loader must not run what is there either."""
    folder = tmp_path / "tsp"
    shutil.copytree(TSP_EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    assert load_task_folder(folder).description != "PLANTED"
    assert not (folder / "__pycache__").exists()  # loading writes no bytecode beside the task either
    identity = task_folder_identity(folder)
    planted = tmp_path / "planted.py"
    planted.write_text((folder / "task.py").read_text() + "\nDESCRIPTION = 'PLANTED'\n")
    py_compile.compile(
        str(planted),
        cfile=str(folder / "__pycache__" / f"task.{sys.implementation.cache_tag}.pyc"),
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,  # valid whatever task.py holds
    )
    assert task_folder_identity(folder) == identity
    assert load_task_folder(folder).description != "PLANTED"


@pytest.mark.slow
def test_task_toml_budgets_apply_unless_a_flag_says_otherwise(
    scripted_model: Callable[..., str], tmp_path: Path
) -> None:
    folder = tmp_path / "tsp"
    shutil.copytree(TSP_EXAMPLE, folder)
    with (folder / "task.toml").open("a") as toml:
        toml.write("\n[budgets]\nresponses_per_call = 1\nutility_calls = 1\n")
    model = scripted_model(f"return {fenced(NEAREST_NEIGHBOUR)!r}")
    common = ["improve", "--task", str(folder), "--model", model, "--store", str(tmp_path / "s.sqlite"), "--json"]
    from_toml = json.loads(CliRunner().invoke(cli, common).stdout)
    from_flag = json.loads(CliRunner().invoke(cli, [*common, "--responses-per-call", "2"]).stdout)
    assert from_toml["lm_responses"] == 1 and from_flag["lm_responses"] == 1  # the utility budget of 1 caps n
    wider = json.loads(CliRunner().invoke(cli, [*common, "--responses-per-call", "2", "--utility-budget", "3"]).stdout)
    assert wider["lm_responses"] == 2
    (folder / "task.toml").write_text("[budgets]\nresponses = 3\n")
    checked = CliRunner().invoke(cli, ["tasks", "check", str(folder)])
    assert checked.exit_code == 1 and "unknown budget 'responses'" in checked.stdout


@pytest.mark.slow
def test_the_loop_runs_on_a_task_folder(
    scripted_model: Callable[..., str], options_for: Callable[..., RunOptions]
) -> None:
    model = scripted_model(f"return {fenced(NEAREST_NEIGHBOUR)!r}")
    report = api.run(replace(options_for(model), task=str(TSP_EXAMPLE)))
    assert [it.iteration for it in report.iterations] == [0, 1]
    assert report.iterations[0].meta_utility_val == 1.0  # the seed improver adopts the nearest-neighbour tour
