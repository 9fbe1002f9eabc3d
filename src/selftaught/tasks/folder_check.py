"""The check of a user's task folder: its files, its instances, and its seed solution run in the sandbox."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from selftaught.errors import SelftaughtError
from selftaught.sandbox.launcher import Launcher
from selftaught.tasks.base import TEST, VALIDATION
from selftaught.tasks.evaluation import Evaluation, SolutionEvaluator
from selftaught.tasks.user_task import load_task_folder


@dataclass(frozen=True)
class TaskFolderCheck:
    """What the check found; every problem names the file it is in."""

    problems: tuple[str, ...]
    #: The seed solution's score on validation; None when it could not be scored.
    seed_score: float | None
    #: Outputs of the seed solution the task's own scorer raised on.
    scorer_errors: int

    @property
    def ok(self) -> bool:
        return not self.problems


def check_task_folder(folder: Path) -> TaskFolderCheck:
    """Loads the folder, makes its instances and scores its seed solution on validation, in a sandbox of its own.

    Never raises for what is wrong with the folder: each problem is in the result.
    """
    problems: list[str] = []
    evaluation: Evaluation | None = None
    try:
        task = load_task_folder(folder)
        for split in (VALIDATION, TEST):
            task.instances(split)
        launcher = Launcher()
        try:
            evaluation = SolutionEvaluator(launcher).evaluate(task, task.seed_solution, VALIDATION, seed=0)
        finally:
            launcher.close()
        problems.extend(_seed_problems(folder, evaluation))
    except SelftaughtError as error:
        problems.extend(str(error).split("; "))
    except Exception as error:  # the user's task.py raised while making instances
        problems.append(f"{folder / 'task.py'}: {type(error).__name__}: {error}")
    return TaskFolderCheck(
        tuple(problems),
        evaluation.score if evaluation is not None else None,
        sum(count for _, count in evaluation.scorer_problems) if evaluation is not None else 0,
    )


def _seed_problems(folder: Path, evaluation: Evaluation) -> list[str]:
    problems = []
    if evaluation.failure:
        problems.append(f"{folder / 'seed.py'}: the seed solution failed: {evaluation.failure}")
    elif evaluation.problem:
        problems.append(f"{folder / 'seed.py'} or {folder / 'task.py'}: {evaluation.problem}")
    # The file leads, as in every problem; the scorer's problem names the line of task.py when the traceback shows it.
    problems.extend(
        f"{folder / 'task.py'}: the scorer failed on {count} of {evaluation.instances} outputs of the seed solution: "
        f'{problem}; a bug in task.py (only ValueError("why") marks an output invalid)'
        for problem, count in evaluation.scorer_problems
    )
    return problems
