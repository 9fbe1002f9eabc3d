"""`selftaught improve`: one run of an improver on a task's solution."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.syntax import Syntax

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
from selftaught.cli.safe_output import one_line, stderr_console, visible_controls
from selftaught.cli.scorer_errors import scorer_errors_json, scorer_warnings
from selftaught.cli.spending import Spending
from selftaught.errors import SelftaughtError
from selftaught.loop.estimate import estimate_improve
from selftaught.loop.stats import RunStats
from selftaught.tasks.registry import get_task


@click.command("improve")
@run_options
@improver_option
@click.option(
    "--solution",
    "solution_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Start from this solution instead of the task's seed solution.",
)
@click.option(
    "-o",
    "--output",
    "output_file",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the improved solution to this file, exactly as it was scored (stdout then shows only the summary).",
)
@dry_run_option
@json_option
@run_user_errors
def improve_command(
    options: RunOptions,
    improver_file: Path | None,
    solution_file: Path | None,
    output_file: Path | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Run an improver once on a task: it gets the task's solution, the utility and the language model.

    Prints the improved solution with its validation and test utility, or writes it to -o FILE.
    Warns when it scores lower than the initial solution (the paper's improver can return a worse
    one). Exits 1 when the improver produced no solution (it raised, or no response contained code).
    """
    task = get_task(options.task)
    improver = read_improver(improver_file)
    solution = api.read_program(solution_file, task.entry_point) if solution_file else None
    if dry_run:
        show_estimate(estimate_improve(options, improver, solution), as_json)
        return
    stats = RunStats()
    with scorer_warnings(stats), ProgressDisplay(stats, stderr_console()):
        result = api.improve(options, improver=improver, initial_solution=solution, stats=stats)
    spending = Spending(
        result.lm_calls, result.lm_responses, result.cost_usd, options.max_cost_usd, result.unpriced_calls
    )
    if as_json:
        print_json(
            {
                "run_id": result.run_id,
                "algorithm": result.algorithm,
                "utility_val": result.utility_val,
                "utility_test": result.utility_test,
                "initial_utility_val": result.initial_utility_val,
                "utility_calls": result.utility_calls,
                "error": result.error,
                **spending.as_json(),
                **scorer_errors_json(result.scorer_problems),
            }
        )
    else:
        console = stdout_console()
        if result.algorithm is not None and output_file is None:
            console.print(Syntax(visible_controls(result.algorithm), "python"))
        console.print(
            f"run {result.run_id}: utility val {result.utility_val:.3f} test {result.utility_test:.3f} "
            f"(initial solution val {result.initial_utility_val:.3f}); {spending.calls_text()}, "
            f"{result.utility_calls} utility calls, {spending.cost_text()}",
            soft_wrap=True,  # one line in a pipe too, for whoever reads it with grep
        )
    if result.algorithm is None:
        stderr_console().print(one_line(f"error: {result.error}"), soft_wrap=True)
        sys.exit(EXIT_NOTHING_PRODUCED)
    if result.utility_val < result.initial_utility_val:
        stderr_console().print(
            f"warning: the improved solution scores {result.utility_val:.3f} on validation, below the initial "
            f"solution's {result.initial_utility_val:.3f} (an improver may return a worse solution; keep the "
            "initial one)",
            soft_wrap=True,
        )
    if output_file is not None:
        _write_solution(output_file, result.algorithm)


def _write_solution(path: Path, source: str) -> None:
    # Exactly the program that was scored: escaping anything would change the code the user runs.
    try:
        path.write_text(source if source.endswith("\n") else source + "\n", encoding="utf-8")
    except OSError as error:
        raise SelftaughtError(f"cannot write the improved solution to {path}: {error.strerror or error}") from None
    stderr_console().print(f"improved solution written to {path}", soft_wrap=True, markup=False)
