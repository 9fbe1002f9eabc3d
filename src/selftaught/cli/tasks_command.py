"""`selftaught tasks`: the built-in downstream tasks, and a check of the user's own task folders."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from selftaught.cli.plumbing import json_option, print_json, stdout_console, user_errors
from selftaught.cli.safe_output import one_line
from selftaught.errors import SelftaughtError
from selftaught.tasks.base import TEST, VALIDATION
from selftaught.tasks.registry import get_task, task_names
from selftaught.tasks.user_task import load_task_folder


@click.group("tasks", invoke_without_command=True)
@json_option
@click.pass_context
def tasks_command(context: click.Context, as_json: bool) -> None:
    """List the built-in tasks: instances per split and the time limit per instance.

    A task of your own is a folder (seed.py, task.py, optional task.toml) given to --task as a
    path; `selftaught tasks check FOLDER` validates one.
    """
    if context.invoked_subcommand is not None:
        return
    rows: list[dict[str, object]] = []
    for name in task_names():
        task = get_task(name)
        rows.append(
            {
                "name": name,
                "entry_point": task.entry_point,
                "validation_instances": task.splits[VALIDATION].count,
                "test_instances": task.splits[TEST].count,
                "time_limit_seconds": task.time_limit_seconds,
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table(title="built-in tasks (--task NAME)")
    for column in ("task", "solution defines", "validation", "test", "limit"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(
            str(row["name"]),
            f"{row['entry_point']}()",
            str(row["validation_instances"]),
            str(row["test_instances"]),
            f"{row['time_limit_seconds']:g} s",
        )
    stdout_console().print(table)


@tasks_command.command("check")
@click.argument("folder", type=click.Path(path_type=Path))
@json_option
@user_errors
def check_command(folder: Path, as_json: bool) -> None:
    """Validate a task folder: its files, its instances, and its seed solution run in the sandbox.

    Every problem names the file it is in. Exits 1 when there is any.
    """
    # The sandbox and the evaluator load only here: listing the tasks needs neither.
    from selftaught.sandbox.launcher import Launcher
    from selftaught.tasks.evaluation import SolutionEvaluator

    problems: list[str] = []
    seed_score = None
    scorer_problems: tuple[tuple[str, int], ...] = ()
    try:
        task = load_task_folder(folder)
        for split in (VALIDATION, TEST):
            task.instances(split)
        launcher = Launcher()
        try:
            evaluation = SolutionEvaluator(launcher).evaluate(task, task.seed_solution, VALIDATION, seed=0)
        finally:
            launcher.close()
        seed_score = evaluation.score
        scorer_problems = evaluation.scorer_problems
        if evaluation.failure:
            problems.append(f"{folder / 'seed.py'}: the seed solution failed: {evaluation.failure}")
        elif evaluation.problem:
            problems.append(f"{folder / 'seed.py'} or {folder / 'task.py'}: {evaluation.problem}")
        problems.extend(
            _scorer_problem(folder, problem, count, evaluation.instances) for problem, count in scorer_problems
        )
    except SelftaughtError as error:
        problems.extend(str(error).split("; "))
    except Exception as error:  # the user's task.py raised while making instances
        problems.append(f"{folder / 'task.py'}: {type(error).__name__}: {error}")
    if as_json:
        print_json(
            {
                "folder": str(folder),
                "ok": not problems,
                "problems": problems,
                "seed_score": seed_score,
                "scorer_errors": sum(count for _, count in scorer_problems),
            }
        )
    else:
        console = stdout_console()
        for problem in problems:
            console.print(one_line(f"problem: {problem}"), soft_wrap=True)
        if not problems:
            console.print(f"{folder}: ok; the seed solution scores {seed_score:.3f} on validation")
    if problems:
        sys.exit(1)


def _scorer_problem(folder: Path, problem: str, count: int, instances: int) -> str:
    # The file leads, as in every problem; `problem` names the line of task.py when the traceback shows it.
    return (
        f"{folder / 'task.py'}: the scorer failed on {count} of {instances} outputs of the seed solution: "
        f'{problem}; a bug in task.py (only ValueError("why") marks an output invalid)'
    )
