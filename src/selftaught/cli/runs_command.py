"""`selftaught runs`: the runs recorded in a store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from selftaught.cli.plumbing import json_option, open_reader, print_json, stdout_console, store_option, user_errors
from selftaught.cli.safe_output import one_line

#: Statuses a user can act on with `selftaught run --resume`.
RESUMABLE = ("killed", "interrupted", "failed", "cost limit reached")


def run_summary(run: dict[str, Any]) -> dict[str, Any]:
    """A run as `runs --json` prints it.

    `iterations` counts the recorded iteration rows, iteration 0 (the starting improver's scoring)
    included, as it always has; `iterations_done` of `iterations_planned` (T) are the self-improvement
    steps, null for commands other than `run`.
    """
    is_loop = run["command"] == "run"
    return {
        "id": run["id"],
        "status": run["status"],
        "command": run["command"],
        "task": run["task"],
        "model": run["model"],
        "seed": run["seed"],
        "profile": (run["config"] or {}).get("name"),
        "started_at": run["started_at"],
        "finished_at": run["finished_at"],
        "iterations": run["iteration_rows"],
        "iterations_done": max(0, run["iteration_rows"] - 1) if is_loop else None,
        "iterations_planned": (run["config"] or {}).get("iterations") if is_loop else None,
        "best_meta_utility_val": run["best_val"],
        "cost_usd": run["cost_usd"],
        "attempts": run["attempts"],
    }


def _iterations_cell(run: dict[str, Any]) -> str:
    """Done of planned, as "2/2" for a finished T=2 run: its 3 rows include iteration 0, which improves nothing."""
    if run["iterations_done"] is None:
        return ""
    planned = run["iterations_planned"]
    return str(run["iterations_done"]) if planned is None else f"{run['iterations_done']}/{planned}"


@click.command("runs")
@store_option
@json_option
@user_errors
def runs_command(store: Path, as_json: bool) -> None:
    """List the runs in the store, oldest first, with their status.

    A run whose process died without a word (SIGKILL, power loss) shows as 'killed'; a killed,
    interrupted, failed or out-of-money `run` continues with `selftaught run --resume RUN_ID`.
    """
    with open_reader(store) as reader:
        runs = [run_summary(run) for run in reader.runs()]
    if as_json:
        print_json(runs)
        return
    table = Table(title=f"runs in {store}")
    for column in ("id", "status", "command", "task", "model", "seed", "iterations", "best val", "cost", "started"):
        table.add_column(column, no_wrap=column not in ("task", "model"))
    for run in runs:
        best = run["best_meta_utility_val"]
        # Fields as recorded: a newline in an imported model name would split its row into forged ones.
        table.add_row(
            one_line(run["id"]),
            one_line(run["status"]),
            one_line(run["command"]),
            one_line(run["task"]),
            one_line(run["model"]),
            str(run["seed"]),
            _iterations_cell(run),
            "" if best is None else f"{best:.3f}",
            f"${run['cost_usd']:.4f}",
            one_line(run["started_at"][:16].replace("T", " ")),
        )
    console = stdout_console()
    console.print(table)
    if any(run["status"] in RESUMABLE and run["command"] == "run" for run in runs):
        console.print("continue a stopped run with: selftaught run --resume RUN_ID")
