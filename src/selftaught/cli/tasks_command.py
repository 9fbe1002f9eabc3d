"""`selftaught tasks`: the built-in downstream tasks."""

from __future__ import annotations

import click
from rich.table import Table

from selftaught.cli.options import json_option, print_json, stdout_console
from selftaught.tasks.base import TEST, VALIDATION
from selftaught.tasks.registry import get_task, task_names


@click.command("tasks")
@json_option
def tasks_command(as_json: bool) -> None:
    """List the built-in tasks: instances per split and the time limit per instance."""
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
                "summary": (type(task).__doc__ or "").strip().splitlines()[0] if type(task).__doc__ else "",
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
