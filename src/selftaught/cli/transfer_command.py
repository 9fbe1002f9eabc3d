"""`selftaught transfer`: the paper's Table 1 for any improver."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from selftaught import api
from selftaught.api import RunOptions
from selftaught.cli.dry_run import dry_run_option, show_estimate
from selftaught.cli.options import run_options_for_many_tasks
from selftaught.cli.plumbing import (
    json_option,
    open_reader,
    print_json,
    run_user_errors,
    stdout_console,
)
from selftaught.cli.progress import ProgressDisplay
from selftaught.cli.safe_output import one_line, stderr_console
from selftaught.errors import InvalidProgram
from selftaught.loop.estimate import estimate_transfer
from selftaught.loop.seed_improver import IMPROVER_ENTRY_POINT
from selftaught.loop.stats import RunStats
from selftaught.loop.transfer import Estimate

TRANSFER_TASKS = ("str_grid_dist", "modified_quadratic_assignment", "three_sat", "maxcut", "parity_noiseless")


def load_improver(reference: str, store: Path) -> str:
    """An improver file, or the improver a recorded `selftaught run` ended with (its id or a unique prefix, as `show`)."""
    path = Path(reference)
    if path.is_file():
        return api.read_program(path, IMPROVER_ENTRY_POINT)
    if not store.is_file():
        raise InvalidProgram(f"{reference} is neither an improver file nor a run in {store}")
    with open_reader(store) as recorded:  # read-only: a dry run records nothing
        source = recorded.final_improver(reference)
    if source is None:
        raise InvalidProgram(f"{reference} is neither an improver file nor a run in {store}")
    return source


def interval(estimate: Estimate) -> str:
    """The mean in %, and its 95% interval when there are samples enough to have one."""
    if not estimate.has_interval:
        return f"{estimate.mean * 100:.1f}"
    return f"{estimate.mean * 100:.1f} ({estimate.low * 100:.1f}–{estimate.high * 100:.1f})"


def estimate_json(estimate: Estimate) -> dict[str, Any]:
    """`low` and `high` are null for a single sample: a zero-width interval would claim a certainty one run lacks."""
    low, high = (estimate.low, estimate.high) if estimate.has_interval else (None, None)
    return {"mean": estimate.mean, "low": low, "high": high, "samples": list(estimate.samples)}


@click.command("transfer")
@run_options_for_many_tasks
@click.option(
    "--improver",
    "reference",
    required=True,
    help="An improver file, or the id (or a unique id prefix) of a `selftaught run`: its final improver.",
)
@click.option(
    "--tasks",
    "task_list",
    default=",".join(TRANSFER_TASKS),
    show_default=True,
    help="Comma-separated tasks to transfer to.",
)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Repeats per estimate.")
@dry_run_option
@json_option
@run_user_errors
def transfer_command(
    options: RunOptions, reference: str, task_list: str, repeats: int, dry_run: bool, as_json: bool
) -> None:
    """Apply an improver, unchanged, to other tasks: the paper's Table 1.

    For each task: the test utility of the task's seed solution, of what the paper's seed improver
    makes of it, and of what the given improver makes of it; each the mean over the repeats with a
    95% confidence interval (paired: both improvers get the same seeds in each repeat; a single
    repeat has no interval). Each task is recorded as its own run, whose id the table shows.
    """
    improver = load_improver(reference, options.store)
    tasks = [name.strip() for name in task_list.split(",") if name.strip()]
    if dry_run:
        show_estimate(estimate_transfer(options, improver, tasks, repeats), as_json)
        return
    stats = RunStats()
    with ProgressDisplay(stats, stderr_console()):
        rows = api.transfer(options, improver, tasks, repeats, stats=stats)
    if as_json:
        print_json(
            [
                {
                    "task": row.task,
                    "run_id": row.run_id,
                    **{
                        name: estimate_json(value)
                        for name, value in (
                            ("original", row.original),
                            ("seed_improver", row.seed_improver),
                            ("improver", row.improver),
                        )
                    },
                }
                for row in rows
            ]
        )
        return
    cells = "mean (95% CI)" if repeats > 1 else "one repeat, no interval"
    table = Table(
        title=f"transfer: test utility in %, {cells}",
        caption=one_line(f"{options.model} · {repeats} repeat{'s' if repeats > 1 else ''} per cell"),
    )
    table.add_column("task", no_wrap=True)
    for column in ("original solution", "seed improver", "this improver"):
        table.add_column(column)
    table.add_column("run", no_wrap=True)
    for row in rows:
        table.add_row(
            one_line(row.task),  # a task folder's path may hold a newline
            interval(row.original),
            interval(row.seed_improver),
            interval(row.improver),
            one_line(row.run_id),
        )
    console = stdout_console()
    console.print(table)
    show = shlex.join(["selftaught", "show", "RUN_ID", "--store", str(options.store)])
    console.print(one_line(f"each task is recorded as its own run; its record: {show}"), soft_wrap=True)
