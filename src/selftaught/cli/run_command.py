"""`selftaught run`: the STOP self-improvement loop."""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from selftaught import api
from selftaught.api import RunOptions, RunReport
from selftaught.cli.dry_run import dry_run_option, show_estimate
from selftaught.cli.options import improver_option, read_improver, run_options
from selftaught.cli.plumbing import (
    EXIT_MODEL_OUTAGE,
    exit_interrupted,
    json_option,
    open_reader,
    print_json,
    run_user_errors,
    stdout_console,
)
from selftaught.cli.progress import ProgressDisplay
from selftaught.cli.safe_output import one_line, stderr_console
from selftaught.cli.scorer_errors import scorer_errors_json, scorer_warnings
from selftaught.cli.spending import Spending, plural
from selftaught.errors import ModelOutage, SelftaughtError
from selftaught.loop.estimate import estimate_run
from selftaught.loop.stats import RunStats

#: What --resume and --replay take from the command line; everything else comes from the recorded run.
_CONTINUATION_OPTIONS = {
    "--resume": ("store", "workers", "max_cost", "executor", "ray_address", "as_json", "resume"),
    "--replay": ("store", "workers", "task", "executor", "ray_address", "as_json", "replay"),
}


@click.command("run")
@run_options
@click.option(
    "--iterations",
    "iterations",
    type=click.IntRange(min=0),
    default=None,
    help="Self-improvement iterations T. Default: from the profile.",
)
@improver_option
@click.option(
    "--speculate",
    is_flag=True,
    default=False,
    help="Score every candidate improver as soon as the model proposes it, before the improver asks: an "
    "iteration waits for about 4 rounds of model calls instead of 9, the same results, but candidates the "
    "improver never asks about are paid for (counted apart as speculative calls and cost).",
)
@click.option(
    "--resume",
    metavar="RUN_ID",
    default=None,
    help="Continue a run that stopped (killed, Ctrl-C, failed, out of money) with its recorded options; "
    "what it paid for is replayed from the store, not paid again. Only --store, --workers, --max-cost, "
    "--executor and --ray-address apply.",
)
@click.option(
    "--replay",
    metavar="RUN_ID",
    default=None,
    help="Run again with a recorded run's options, answered only from its recorded responses (no live "
    "call at all); evaluations run anew. With the same code the iterations equal the recorded ones. "
    "--task PATH points at the run's task folder where it is now: it must hold the files the run recorded.",
)
@dry_run_option
@json_option
@run_user_errors
def run_command(
    options: RunOptions,
    improver_file: Path | None,
    resume: str | None,
    replay: str | None,
    speculate: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Run STOP: the improver improves itself for T iterations, scored by the meta-utility.

    Each iteration asks the current improver to improve its own source code, scores the
    candidate with the meta-utility (the mean validation utility of the solutions it produces
    on the task over several fresh runs) and keeps it only if it beats the current improver.
    Everything is recorded in the store; the table at the end shows the meta-utility per iteration.
    Ctrl-C, SIGTERM or SIGHUP stop cleanly and print the command that resumes the run. So does a
    model that cannot answer (unreachable after retries, key refused: exit 3); the summary names the
    best downstream solution found (`selftaught show RUN_ID --best --source-only`).
    """
    _refuse_options_a_continuation_ignores(resume, replay)
    options = replace(options, speculate=speculate)
    if resume is None and replay is None:
        # The first line of progress: what the run can cost at most, before it costs anything.
        estimate = estimate_run(options, read_improver(improver_file))
        if dry_run:
            show_estimate(estimate, as_json)
            return
        stderr_console().print(estimate.summary(), soft_wrap=True)
    stats = RunStats()
    try:
        with scorer_warnings(stats), ProgressDisplay(stats, stderr_console()):
            report = _run(options, improver_file, resume, replay, stats)
    except KeyboardInterrupt as interruption:  # Ctrl-C, SIGTERM or SIGHUP: the sandbox is closed already
        if stats.run_id is None:
            raise
        exit_interrupted(interruption, f"continue the run with: {_resume_command(stats.run_id, options)}")
    except ModelOutage as outage:
        if stats.run_id is None:
            raise
        stderr_console().print(
            Text.assemble(
                ("error: ", "bold red"),
                one_line(str(outage)),
                f"\nthe run is stopped and recorded as interrupted; what it was answered is kept. Once the model"
                f" answers again, continue it with: {_resume_command(stats.run_id, options)}",
            ),
            soft_wrap=True,
        )
        sys.exit(EXIT_MODEL_OUTAGE)
    _print_report(report, stats, as_json, resumed=resume is not None)


def _resume_command(run_id: str, options: RunOptions, *extra: str) -> str:
    return shlex.join(["selftaught", "run", "--resume", run_id, "--store", str(options.store), *extra])


def _run(
    options: RunOptions, improver_file: Path | None, resume: str | None, replay: str | None, stats: RunStats
) -> RunReport:
    workers = options.workers if _given("workers") else None
    # Where evaluations run is not part of what a run is: each attempt takes it from its own flags.
    executor, ray_address = options.executor, options.ray_address
    if resume is not None:
        _refuse_a_finished_run(resume, options.store)
        return api.resume(
            resume,
            options.store,
            workers=workers,
            max_cost_usd=options.max_cost_usd,
            stats=stats,
            executor=executor,
            ray_address=ray_address,
        )
    if replay is not None:
        task = options.task if _given("task") else None
        return api.replay(
            replay, options.store, workers=workers, task=task, stats=stats, executor=executor, ray_address=ray_address
        )
    return api.run(options, improver=read_improver(improver_file), stats=stats)


def _refuse_a_finished_run(run_id: str, store: Path) -> None:
    # The API hands back a finished run's report as it is; here that would read as a new result.
    with open_reader(store) as reader:
        recorded = reader.run(run_id)
    if recorded["status"] == "finished":
        raise SelftaughtError(f"run {recorded['id']} already finished; nothing to resume")


def _given(parameter: str) -> bool:
    source = click.get_current_context().get_parameter_source(parameter)
    return source is click.core.ParameterSource.COMMANDLINE


def _refuse_options_a_continuation_ignores(resume: str | None, replay: str | None) -> None:
    if resume is not None and replay is not None:
        raise SelftaughtError("give --resume or --replay, not both")
    if resume is None and replay is None:
        return
    flag = "--resume" if resume is not None else "--replay"
    allowed = _CONTINUATION_OPTIONS[flag]
    command = click.get_current_context().command
    ignored = [param.opts[0] for param in command.params if param.name not in allowed and _given(str(param.name))]
    if ignored:
        applying = ", ".join(f"--{name.replace('_', '-')}" for name in allowed if name not in ("as_json", flag[2:]))
        raise SelftaughtError(
            f"{flag} uses the recorded run's options; {', '.join(ignored)} cannot change them (only {applying} apply)"
        )


def _print_report(report: RunReport, stats: RunStats, as_json: bool, resumed: bool) -> None:
    options = report.options
    # The whole run, over every attempt, from its record: each call counted once, however often it was replayed.
    with open_reader(options.store) as reader:
        whole_run = reader.counts(report.run_id)
    spending = Spending(
        whole_run["lm_calls"] - whole_run["replayed_lm_calls"],
        whole_run["lm_responses"],
        whole_run["cost_usd"],
        options.max_cost_usd,
        report.unpriced_calls,
    )
    attempt = {
        "resumed": resumed,
        "lm_calls": stats.lm_calls,
        "replayed_lm_calls": stats.replayed_lm_calls,
        "evaluations": stats.evaluations,
        "cost_usd": stats.attempt_cost_usd,
    }
    if as_json:
        print_json(_report_json(report, stats, spending, attempt))
        return
    console = stdout_console()
    _print_iterations(report, console)
    if resumed:
        console.print(
            f"this attempt: {plural(stats.lm_calls, 'language-model call')} ({stats.replayed_lm_calls} answered from the run's "
            f"record), {stats.evaluations} evaluations, ${stats.attempt_cost_usd:.4f} spent, "
            f"{stats.elapsed_seconds:.0f} s"
        )
        console.print(f"the whole run: {spending.calls_text()}, {spending.cost_text()}; records in {options.store}")
    else:
        console.print(
            f"{spending.calls_text()}, {stats.evaluations} evaluations, {spending.cost_text()}, "
            f"{stats.elapsed_seconds:.0f} s; records in {options.store}"
        )
    if report.best_solution is not None:
        best = report.best_solution
        console.print(
            f"best solution found: val {best.utility_val:.3f} (test {best.utility_test:.3f}, for reporting); its code: "
            f"selftaught show {report.run_id} --store {shlex.quote(str(options.store))} --best --source-only",
            soft_wrap=True,
        )
    if options.speculate:
        console.print(
            f"speculation: {report.speculative_calls} calls (${report.speculative_cost_usd:.4f}) went to candidates "
            "scored ahead that the improver never asked about"
        )
    if report.throttling.throttled_requests:
        console.print(
            f"the model's server pushed back {report.throttling.throttled_requests} times (HTTP 429/529): "
            f"requests in flight went down from {report.throttling.most_in_flight} to "
            f"{report.throttling.limit} and grow back as they succeed"
        )
    if report.stopped:
        console.print(
            f"stopped early: {report.stopped} (--max-cost {options.max_cost_usd:g}); to go on, resume it with a "
            f"higher limit: {_resume_command(report.run_id, options, '--max-cost', 'USD')}",
            soft_wrap=True,
        )


def _print_iterations(report: RunReport, console: Console) -> None:
    """The paper's table: meta-utility per iteration, validation and test, and what each iteration kept."""
    options = report.options
    table = Table(
        title=f"meta-utility per iteration · run {report.run_id}", caption=f"{options.task} · {options.model}"
    )
    for column in ("iteration", "val", "test", "candidate val", "candidate test", "kept"):
        table.add_column(column, justify="right", no_wrap=True)
    for it in report.iterations:
        table.add_row(
            str(it.iteration),
            f"{it.meta_utility_val:.3f}",
            f"{it.meta_utility_test:.3f}",
            "" if it.candidate_val is None else f"{it.candidate_val:.3f}",
            "" if it.candidate_test is None else f"{it.candidate_test:.3f}",
            "seed" if it.iteration == 0 else ("yes" if it.accepted else "no"),
        )
    console.print(table)
    for it in report.iterations:
        if it.error:
            console.print(one_line(f"iteration {it.iteration}: {it.error}"), overflow="ellipsis", no_wrap=True)


def _report_json(report: RunReport, stats: RunStats, spending: Spending, attempt: dict[str, Any]) -> dict[str, Any]:
    options = report.options
    return {
        "run_id": report.run_id,
        "task": options.task,
        "model": options.model,
        "profile": options.profile.name,
        "seed": options.seed,
        "store": str(options.store),
        "iterations": [
            {
                "iteration": it.iteration,
                "meta_utility_val": it.meta_utility_val,
                "meta_utility_test": it.meta_utility_test,
                "accepted": it.accepted,
                "candidate_val": it.candidate_val,
                "candidate_test": it.candidate_test,
                "error": it.error,
            }
            for it in report.iterations
        ],
        "final_improver": report.final_improver,
        "best_solution": None if report.best_solution is None else report.best_solution.as_dict(),
        "elapsed_seconds": round(stats.elapsed_seconds, 1),
        # The whole run (every attempt, if it was resumed), and this attempt alone.
        **spending.as_json(),
        "attempt": attempt,
        "speculate": options.speculate,
        "speculative_calls": report.speculative_calls,
        "speculative_cost_usd": report.speculative_cost_usd,
        "throttled_requests": report.throttling.throttled_requests,
        "most_requests_in_flight": report.throttling.most_in_flight,
        "stopped": report.stopped,
        **scorer_errors_json(report.scorer_problems),
    }
