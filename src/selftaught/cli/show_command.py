"""`selftaught show`: one run's record, or one iteration's improver with its diff against its parent."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from selftaught.cli.plumbing import json_option, open_reader, print_json, stdout_console, store_option, user_errors
from selftaught.cli.safe_output import one_line, visible_controls
from selftaught.report.views import best_solution_view, iteration_view, run_view


@click.command("show")
@click.argument("run_id")
@click.option(
    "--iteration", type=click.IntRange(min=0), default=None, help="Show the improver proposed at this iteration."
)
@click.option("--diff", is_flag=True, help="With --iteration: show the diff against its parent instead of the source.")
@click.option(
    "--best",
    is_flag=True,
    help="Show the best downstream solution the run found (by validation score; test for reporting).",
)
@click.option(
    "--source-only",
    is_flag=True,
    help="With --best or --iteration: print only the program's source, to save with `>` and run.",
)
@store_option
@json_option
@user_errors
def show_command(
    run_id: str, iteration: int | None, diff: bool, best: bool, source_only: bool, store: Path, as_json: bool
) -> None:
    """Show a recorded run: its options, status, cost and meta-utility per iteration.

    With --iteration N, the improver proposed at iteration N (at 0: the starting improver), its
    validation and test meta-utility, whether it was kept, and its parent: the improver that
    produced it by improving its own source. With --best, the best downstream solution the run
    evaluated, with its validation and test utility. RUN_ID may be a unique prefix. Safe while the
    run is writing.
    """
    if best and (iteration is not None or diff):
        raise click.UsageError("--best shows a solution of the run; it takes no --iteration or --diff")
    if source_only and (diff or as_json or not (best or iteration is not None)):
        raise click.UsageError("--source-only needs --best or --iteration N, and no --diff or --json")
    if diff and iteration is None:
        # A run has one diff per iteration; silently showing the whole run instead would look like "no diff".
        raise click.UsageError("--diff needs --iteration N: the iteration whose improver to diff against its parent")
    with open_reader(store) as reader:
        if best:
            view = best_solution_view(reader, run_id)
        elif iteration is None:
            view = run_view(reader, run_id)
        else:
            view = iteration_view(reader, run_id, iteration, with_diff=diff)
    if as_json:
        print_json(view)
    elif source_only:
        _write_program(view["source"], exactly=not sys.stdout.isatty())
    elif best:
        _print_best(view)
    elif iteration is None:
        _print_run(view)
    else:
        _print_iteration(view, diff)


def _print_run(view: dict[str, Any]) -> None:
    console = stdout_console()
    # Every field as recorded, and an imported record can hold anything: one_line keeps each line one line.
    console.print(
        one_line(
            f"run {view['id']} · {view['command']} · {view['status']} · {view['task']} · {view['model']} · "
            f"seed {view['seed']} · profile {(view['profile'] or {}).get('name')}"
        ),
    )
    console.print(
        one_line(
            f"started {view['started_at']}, finished {view['finished_at'] or '-'}, attempts {view['attempts']}; "
            f"{view['lm_calls']} language-model calls ({view['live_lm_calls']} live), "
            f"{view['evaluations']} evaluations, ${view['cost_usd']:.4f}"
        ),
    )
    stopped_by = _why_stopped(view)
    if stopped_by:
        console.print(one_line(f"{view['status']}: {stopped_by}"), soft_wrap=True)
    if not view["iterations"]:
        if view["result"] is not None and not stopped_by:
            console.print(one_line(f"result: {view['result']}"))
        return
    table = Table(title="meta-utility per iteration")
    for column in ("iteration", "val", "test", "candidate val", "candidate test", "kept", "improver"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in view["iterations"]:
        table.add_row(
            str(row["iteration"]),
            f"{row['meta_utility_val']:.3f}",
            f"{row['meta_utility_test']:.3f}",
            "" if row["candidate_val"] is None else f"{row['candidate_val']:.3f}",
            "" if row["candidate_test"] is None else f"{row['candidate_test']:.3f}",
            "seed" if row["iteration"] == 0 else ("yes" if row["accepted"] else "no"),
            one_line(row["improver_hash"][:12]),
        )
    console.print(table)
    console.print(one_line(f"an iteration's improver and its diff: selftaught show {view['id']} --iteration N --diff"))


def _print_iteration(view: dict[str, Any], diff: bool) -> None:
    console = stdout_console()
    kept = "the starting improver" if view["iteration"] == 0 else ("kept" if view["accepted"] else "not kept")
    scores = (
        "no candidate"
        if view["meta_utility_val"] is None
        else f"meta-utility val {view['meta_utility_val']:.3f}, test {view['meta_utility_test']:.3f}"
    )
    console.print(one_line(f"run {view['run_id']} · iteration {view['iteration']} · {scores} · {kept}"))
    if view["parent_hash"]:
        console.print(
            one_line(
                f"parent {view['parent_hash'][:12]} (in use after iteration {view['iteration'] - 1}), "
                f"improver run {view['produced_by_improver_run']}"
            ),
        )
    if view["error"]:
        console.print(one_line(f"error: {view['error']}"))
    # Not through rich, so never cropped or wrapped: the diff applies with `patch`, the source runs. Control
    # characters are escaped in a pipe too, since a saved file reaches a terminal later (`cat`, `less -R`);
    # inside string literals the escapes keep the code's meaning. `--json` has the exact text.
    text = (view["diff"] or "(no change)\n") if diff else view["source"]
    if text is not None:
        _write_program(text)


def _print_best(view: dict[str, Any]) -> None:
    found_by = (
        "the task's seed solution" if view["improver_run_id"] is None else f"improver run {view['improver_run_id']}"
    )
    test = "not scored on test" if view["utility_test"] is None else f"test {view['utility_test']:.3f}"
    stdout_console().print(
        one_line(
            f"run {view['run_id']} · best solution {view['hash'][:12]} · val {view['utility_val']:.3f} · {test} · "
            f"from {found_by}"
        ),
        soft_wrap=True,
    )
    _write_program(view["source"])


def _write_program(text: str, exactly: bool = False) -> None:
    """A program as recorded, its control characters escaped (what is shown reaches a terminal, now or later),
    or `exactly`, for --source-only into a file or a pipe: escaping would change the program (inside a raw
    string, an escape is not the character), and the copy must be the program that was scored."""
    sys.stdout.flush()
    shown = text if exactly else visible_controls(text)
    sys.stdout.write(shown if shown.endswith("\n") else shown + "\n")


def _why_stopped(view: dict[str, Any]) -> str | None:
    """What stopped a run before its end, as recorded: the model's outage, a signal, or an error."""
    result = view["result"] if isinstance(view["result"], dict) else {}
    if view["status"] == "finished":
        return None
    if result.get("reason"):
        return str(result["reason"])
    if result.get("signal"):
        return f"stopped by {result['signal']}"
    return str(result["error"]) if result.get("error") else None
