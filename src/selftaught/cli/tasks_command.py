"""`selftaught tasks`: the built-in downstream tasks, and a check of the user's own task folders."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from selftaught.cli.plumbing import json_option, print_json, stdout_console, user_errors
from selftaught.cli.safe_output import one_line
from selftaught.tasks.base import TEST, VALIDATION
from selftaught.tasks.registry import get_task, task_names


@click.group("tasks", invoke_without_command=True)
@json_option
@click.pass_context
def tasks_command(context: click.Context, as_json: bool) -> None:
    """List the tasks (built-in and from plugins): instances per split and the time limit per instance.

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
    table = Table(title="tasks (--task NAME)")
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
    from selftaught.tasks.folder_check import check_task_folder

    check = check_task_folder(folder)
    if as_json:
        print_json(
            {
                "folder": str(folder),
                "ok": check.ok,
                "problems": list(check.problems),
                "seed_score": check.seed_score,
                "scorer_errors": check.scorer_errors,
            }
        )
    else:
        console = stdout_console()
        for problem in check.problems:
            console.print(one_line(f"problem: {problem}"), soft_wrap=True)
        if check.ok:
            console.print(f"{folder}: ok; the seed solution scores {check.seed_score:.3f} on validation")
    if not check.ok:
        sys.exit(1)
