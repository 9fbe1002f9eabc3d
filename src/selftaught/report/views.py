"""A recorded run as plain data: its summary, one iteration's improver with its parent, its curves."""

from __future__ import annotations

import difflib
from typing import Any

from selftaught.errors import StoreError
from selftaught.report.plot import RunCurve
from selftaught.store.contracts import Reader


def run_view(reader: Reader, run_id: str) -> dict[str, Any]:
    """The run's record and the meta-utility of every iteration, with the improver kept after it."""
    run = reader.run(run_id)
    return {
        "id": run["id"],
        "command": run["command"],
        "status": run["status"],
        "task": run["task"],
        "model": run["model"],
        "seed": run["seed"],
        "profile": run["config"],
        "started_at": run["started_at"],
        "finished_at": run["finished_at"],
        "attempts": run["attempts"],
        "result": run["result"],
        **reader.counts(run["id"]),
        "iterations": [
            {
                "iteration": row["iteration"],
                "meta_utility_val": row["meta_utility_val"],
                "meta_utility_test": row["meta_utility_test"],
                "candidate_val": row["candidate_val"],
                "candidate_test": row["candidate_test"],
                "accepted": bool(row["accepted"]),
                "improver_hash": row["improver_hash"],
                "candidate_hash": row["candidate_hash"],
                "error": row["error"],
            }
            for row in reader.iterations(run["id"])
        ],
    }


def best_solution_view(reader: Reader, run_id: str) -> dict[str, Any]:
    """The best downstream solution the run evaluated on validation, its source and scores."""
    run = reader.run(run_id)
    best = reader.best_solution(run["id"])
    if best is None:
        raise StoreError(f"run {run['id']} evaluated no solution on validation (yet)")
    return {"run_id": run["id"], **best}


def iteration_view(reader: Reader, run_id: str, iteration: int, with_diff: bool) -> dict[str, Any]:
    """The improver proposed at `iteration` (the starting improver at 0), its parent and its scores.

    The parent is the improver in use after the previous iteration: it produced the candidate by
    improving its own source, so the diff shows what self-improvement changed.
    """
    run = reader.run(run_id)
    rows = {row["iteration"]: row for row in reader.iterations(run["id"])}
    if iteration not in rows:
        recorded = f"0..{max(rows)}" if rows else "none"
        raise StoreError(f"run {run['id']} has no iteration {iteration} (recorded: {recorded})")
    row = rows[iteration]
    if iteration == 0:
        program_hash, parent_hash = row["improver_hash"], None
        val, test = row["meta_utility_val"], row["meta_utility_test"]
    else:
        program_hash, parent_hash = row["candidate_hash"], rows[iteration - 1]["improver_hash"]
        val, test = row["candidate_val"], row["candidate_test"]
    source = reader.program(program_hash) if program_hash else None
    view: dict[str, Any] = {
        "run_id": run["id"],
        "iteration": iteration,
        "program_hash": program_hash,
        "source": source,
        "parent_hash": parent_hash,
        "produced_by_improver_run": row["improver_run_id"],
        "meta_utility_val": val,
        "meta_utility_test": test,
        "accepted": bool(row["accepted"]),
        "in_use_after": row["improver_hash"],
        "error": row["error"],
    }
    if with_diff:
        parent = reader.program(parent_hash) if parent_hash else ""
        view["diff"] = "".join(
            difflib.unified_diff(
                parent.splitlines(keepends=True),
                (source or "").splitlines(keepends=True),
                fromfile=f"iteration {iteration - 1}" if parent_hash else "nothing",
                tofile=f"iteration {iteration} candidate",
            )
        )
    return view


def run_curve(reader: Reader, run_id: str) -> RunCurve:
    """Meta-utility per iteration of a `run`, validation and test, for plotting."""
    run = reader.run(run_id)
    rows = reader.iterations(run["id"])
    if not rows:
        raise StoreError(f"run {run['id']} recorded no iterations (it is a `{run['command']}` run or stopped early)")
    return RunCurve(
        run_id=run["id"],
        iterations=tuple(row["iteration"] for row in rows),
        val=tuple(row["meta_utility_val"] for row in rows),
        test=tuple(row["meta_utility_test"] for row in rows),
        task=run["task"],
        model=run["model"],
    )
