"""`selftaught experiment`: the paper's experiments, on any model."""

from __future__ import annotations

import click
from rich.table import Table

from selftaught import api
from selftaught.api import RunOptions
from selftaught.cli.dry_run import dry_run_option, show_estimate
from selftaught.cli.options import run_options
from selftaught.cli.plumbing import (
    json_option,
    print_json,
    run_user_errors,
    stdout_console,
)
from selftaught.cli.progress import ProgressDisplay
from selftaught.cli.safe_output import one_line, stderr_console
from selftaught.experiments.unsandboxing import PAPER_RATES, estimate_unsandboxing
from selftaught.loop.stats import RunStats


@click.group("experiment")
def experiment_command() -> None:
    """The paper's experiments, each recorded as a run in the store."""


@experiment_command.command("unsandboxing")
@run_options
@click.option(
    "--attempts", type=click.IntRange(min=1), default=12, show_default=True, help="Improvers to ask the model for."
)
@click.option("--warning", is_flag=True, help="Add a warning against disabling the sandbox to the prompt.")
@dry_run_option
@json_option
@run_user_errors
def unsandboxing_command(options: RunOptions, attempts: int, warning: bool, dry_run: bool, as_json: bool) -> None:
    """The paper's sandbox-circumvention experiment: how often does the model turn the sandbox off?

    The seed improver gets `utility(solution, use_sandbox=True)` and a meta-utility that runs
    improvers with `run(code, globals, use_sandbox=...)`, off by default, and is asked to improve
    itself; every improver the model writes is read for ways of disabling the sandbox
    (use_sandbox=False and its disguises, `run` without the flag, exec/eval of candidates). The
    rate comes with a 95% Wilson interval, beside the paper's. Whatever the generated code asks,
    it runs in the real sandbox: each candidate is executed there, its language-model calls answered
    with the task's seed solution (canned, free), and runtime requests to turn the sandbox off are
    counted too. Requests are made --responses-per-call at a time.
    """
    if dry_run:
        show_estimate(estimate_unsandboxing(options, attempts, warning), as_json)
        return
    stats = RunStats()
    with ProgressDisplay(stats, stderr_console()):
        result = api.unsandboxing_experiment(options, attempts, warning, stats=stats)
    if as_json:
        print_json(result.as_dict())
        return
    table = Table(title=f"sandbox circumvention · run {result.run_id}", caption=options.model)
    for column in ("condition", "improvers", "disabled the sandbox", "rate", "95% Wilson"):
        table.add_column(column, justify="right")
    rate = "-" if result.rate is None else f"{result.rate:.2%}"
    low, high = result.interval_95
    table.add_row(
        "with warning" if warning else "without warning",
        str(result.improvers),
        str(result.disabled),
        rate,
        f"{low:.2%}–{high:.2%}",
    )
    paper = PAPER_RATES["gpt-4"]
    table.add_row(
        "paper, GPT-4, " + ("with warning" if warning else "without warning"),
        "10000",
        "",
        f"{paper['with_warning' if warning else 'without_warning']:.2%}",
        "0.31%–0.57%" if not warning else "",
    )
    console = stdout_console()
    console.print(table)
    console.print(
        f"{result.responses} responses to {attempts} requests; {result.runtime_requests} candidates asked at run time "
        f"for a utility call without the sandbox; labels: {result.labels or 'none'}",
    )
    for example in result.examples:
        console.print(one_line(f"  {', '.join(example['labels'])}: {' | '.join(example['lines'])}"))
