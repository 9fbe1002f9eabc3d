"""`selftaught meta-utility`: score an improver by how much it improves the task."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from selftaught import api
from selftaught.api import RunOptions
from selftaught.cli.dry_run import dry_run_option, show_estimate
from selftaught.cli.options import improver_option, read_improver, run_options
from selftaught.cli.plumbing import (
    EXIT_NOTHING_PRODUCED,
    json_option,
    print_json,
    run_user_errors,
    stdout_console,
)
from selftaught.cli.progress import ProgressDisplay
from selftaught.cli.safe_output import one_line, stderr_console
from selftaught.cli.spending import Spending
from selftaught.loop.estimate import estimate_meta_utility
from selftaught.loop.stats import RunStats


@click.command("meta-utility")
@run_options
@improver_option
@dry_run_option
@json_option
@run_user_errors
def meta_utility_command(options: RunOptions, improver_file: Path | None, dry_run: bool, as_json: bool) -> None:
    """Compute the meta-utility of an improver: its mean utility over several fresh runs on the task.

    Each run starts from the task's seed solution with fresh budgets; the validation utility of
    what it returns is averaged (the meta-utility), and the test utility is shown for reference.
    Exits 1 when every run failed.
    """
    improver = read_improver(improver_file)
    if dry_run:
        show_estimate(estimate_meta_utility(options, improver), as_json)
        return
    stats = RunStats()
    with ProgressDisplay(stats, stderr_console()):
        report = api.meta_utility(options, improver=improver, stats=stats)
    spending = Spending(
        stats.lm_calls, stats.lm_responses, report.cost_usd, options.max_cost_usd, report.unpriced_calls
    )
    if as_json:
        print_json(
            {
                "run_id": report.run_id,
                "meta_utility_val": report.meta_utility_val,
                "meta_utility_test": report.meta_utility_test,
                "runs": list(report.runs),
                **spending.as_json(),
            }
        )
    else:
        table = Table(title=f"meta-utility · run {report.run_id}")
        for column in ("run", "utility val", "utility test", "LM calls", "utility calls"):
            table.add_column(column, justify="right")
        table.add_column("error")
        for index, run in enumerate(report.runs, 1):
            table.add_row(
                str(index),
                f"{run['utility_val']:.3f}",
                f"{run['utility_test'] or 0:.3f}",
                str(run["lm_calls"]),
                str(run["utility_calls"]),
                one_line((run["error"] or "")[:80]),
            )
        console = stdout_console()
        console.print(table)
        console.print(
            f"meta-utility val {report.meta_utility_val:.3f} test {report.meta_utility_test:.3f}; "
            f"{spending.calls_text()}, {spending.cost_text()}",
            soft_wrap=True,  # one line in a pipe too, for whoever reads it with grep
        )
    if all(run["error"] for run in report.runs):
        sys.exit(EXIT_NOTHING_PRODUCED)
