"""The two-level lineage: the chain of improvers a run kept, and what each improver produced downstream."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from selftaught.audit.findings import Finding
from selftaught.dashboard import analysis, fields
from selftaught.dashboard.reader import NotFound, PageReader

#: Improver runs whose improver was scored (the meta-utility's D runs, and those started ahead of asking).
SCORING_PURPOSES = ("meta-utility", "speculative meta-utility")
SELF_IMPROVEMENT = "self-improvement"
RUNS_PER_PAGE = 10
#: Iterations (or, for a run without any, improvers) the lineage shows a page.
STEPS_PER_PAGE = 25
#: Iterations an improver's page lists at most (an improver may stay in use for thousands).
ITERATIONS_LISTED = 50


def lineage_page(reader: PageReader, run: dict[str, Any], page: int) -> dict[str, Any]:
    """One page of iterations: the improver in use, the candidates it proposed (each with the mean utility of its
    scoring runs), the one it returned and whether it was kept; for runs without iterations, their improvers."""
    improver_runs = reader.improver_runs(run["id"])
    returned = reader.returned_solution_scores(run["id"])
    iterations = reader.iterations(run["id"])
    scoring: dict[int | None, list[dict[str, Any]]] = {}
    for row in improver_runs:
        if row["purpose"] in SCORING_PURPOSES:
            scoring.setdefault(row["parent_id"], []).append(row)
    listed = iterations or _improvers(improver_runs, returned)
    pages = max(1, math.ceil(len(listed) / STEPS_PER_PAGE))
    page = min(max(1, page), pages)
    first = (page - 1) * STEPS_PER_PAGE
    steps = []
    for position in range(first, min(first + STEPS_PER_PAGE, len(iterations))):
        row = iterations[position]
        step: dict[str, Any] = {**row, "accepted": bool(row["accepted"])}
        if row["iteration"] == 0:
            step["candidates"] = _candidates(scoring.get(None, []), returned, row["improver_hash"])
        else:
            step["parent_hash"] = iterations[position - 1]["improver_hash"] if position else None
            step["candidates"] = _candidates(scoring.get(row["improver_run_id"], []), returned, row["candidate_hash"])
        steps.append(step)
    improvers = [] if iterations else listed[first : first + STEPS_PER_PAGE]
    return {"run": run, "steps": steps, "improvers": improvers, "page": page, "pages": pages}


def _candidates(
    runs: list[dict[str, Any]], returned: dict[int, dict[str, float]], chosen: str | None
) -> list[dict[str, Any]]:
    """The improvers these scoring runs scored, in the order first proposed, with the mean utility they got."""
    by_improver: dict[str, list[dict[str, Any]]] = {}
    for row in runs:
        by_improver.setdefault(row["improver_hash"], []).append(row)
    return [
        {
            "hash": improver_hash,
            "runs": len(mine),
            "mean_val": _mean_val(mine, returned),
            "failed": sum(1 for row in mine if row["error"]),
            "returned": improver_hash == chosen,
        }
        for improver_hash, mine in by_improver.items()
    ]


def _mean_val(runs: list[dict[str, Any]], returned: dict[int, dict[str, float]]) -> float | fields.Malformed | None:
    """The meta-utility's own average: a run that returned nothing scored 0; None while none has finished."""
    finished = [row for row in runs if row["finished_at"] is not None]
    return fields.mean(returned.get(row["id"], {}).get("validation", 0.0) for row in finished)


def _improvers(improver_runs: list[dict[str, Any]], returned: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    """For a run without iterations (improve, meta-utility, transfer...): each improver it ran and how often."""
    by_improver: dict[str, list[dict[str, Any]]] = {}
    for row in improver_runs:
        by_improver.setdefault(row["improver_hash"], []).append(row)
    return [
        {
            "hash": improver_hash,
            "purposes": sorted({str(row["purpose"]) for row in mine}),
            "runs": len(mine),
            "mean_val": _mean_val(mine, returned),
            "failed": sum(1 for row in mine if row["error"]),
        }
        for improver_hash, mine in by_improver.items()
    ]


# --- one improver ------------------------------------------------------------------------------


def improver_page(reader: PageReader, run: dict[str, Any], improver_hash: str, page: int) -> dict[str, Any]:
    """An improver of a run: where it came from, its source with the audit's findings on their lines, its diff
    against its parent, and one page of the runs that scored it, each with the solutions it tried."""
    source = program(reader, improver_hash)["source"]
    improver_runs = reader.improver_runs(run["id"])
    iterations = reader.iterations(run["id"])
    mine = [row for row in improver_runs if row["improver_hash"] == improver_hash]
    known = {row["improver_hash"] for row in iterations} | {row["candidate_hash"] for row in iterations}
    if not mine and improver_hash not in known:
        raise NotFound(f"run {run['id']} ran no improver {improver_hash[:12]}")
    origin, parent_hash = _origin(improver_hash, improver_runs, iterations)
    parent = program(reader, parent_hash)["source"] if isinstance(parent_hash, str) else None
    scored = [row for row in mine if row["purpose"] != SELF_IMPROVEMENT]
    pages = max(1, math.ceil(len(scored) / RUNS_PER_PAGE))
    page = min(max(1, page), pages)
    shown = scored[(page - 1) * RUNS_PER_PAGE : page * RUNS_PER_PAGE]
    audit = analysis.audit(improver_hash, source)
    its_iterations = [
        {**row, "lineage_page": position // STEPS_PER_PAGE + 1}
        for position, row in enumerate(iterations)
        if improver_hash in (row["improver_hash"], row["candidate_hash"])
    ]
    return {
        "run": run,
        "hash": improver_hash,
        "origin": origin,
        "parent_hash": parent_hash,
        "iterations": its_iterations[:ITERATIONS_LISTED],
        "more_iterations": max(0, len(its_iterations) - ITERATIONS_LISTED),
        "lines": source_lines(source, audit.findings),
        "findings": audit.findings,
        "audit_skipped": audit.skipped,
        "diff": analysis.diff(str(parent_hash), parent, improver_hash, source) if parent is not None else None,
        "improved_itself": [row for row in mine if row["purpose"] == SELF_IMPROVEMENT],
        "runs": _with_downstream(reader, run["id"], shown),
        "scoring_runs": len(scored),
        "page": page,
        "pages": pages,
    }


def program(reader: PageReader, program_hash: str) -> dict[str, Any]:
    """A program's row; NotFound for a hash no program has, its source malformed when it is not text."""
    if not fields.is_program_hash(program_hash):
        raise NotFound(f"{program_hash[:80]!r} is not a program's hash")
    rows = reader.programs({program_hash})
    if program_hash not in rows:
        raise NotFound(f"program {program_hash[:12]} is missing from {reader.path}")
    row = rows[program_hash]
    return {**row, "source": row["source"] if isinstance(row["source"], str) else str(fields.MALFORMED)}


def _origin(
    improver_hash: str, improver_runs: list[dict[str, Any]], iterations: list[dict[str, Any]]
) -> tuple[str, str | None]:
    """Where the improver first appeared, and its parent: the improver whose self-improvement proposed it."""
    for position, row in enumerate(iterations):
        if row["iteration"] == 0 and row["improver_hash"] == improver_hash:
            return "the starting improver", None
        if row["iteration"] != 0 and row["candidate_hash"] == improver_hash:
            kept = "kept" if row["accepted"] else "not kept"
            parent = iterations[position - 1]["improver_hash"] if position else None
            return f"returned in iteration {row['iteration']} ({kept})", parent
    by_id = {row["id"]: row for row in improver_runs}
    iteration_of = {row["improver_run_id"]: row["iteration"] for row in iterations if row["improver_run_id"]}
    for row in improver_runs:
        step = by_id.get(row["parent_id"])
        if row["improver_hash"] == improver_hash and step is not None and step["purpose"] == SELF_IMPROVEMENT:
            where = (
                f"iteration {iteration_of[step['id']]}" if step["id"] in iteration_of else f"improver run {step['id']}"
            )
            return f"proposed in {where}, not returned", step["improver_hash"]
    for row in improver_runs:
        if row["solution_hash"] == improver_hash:  # an improver another one wrote (the unsandboxing experiment)
            return f"returned by improver run {row['id']} ({row['purpose']})", row["improver_hash"]
    return "given to the run", None


def source_lines(source: str, findings: Iterable[Finding]) -> list[dict[str, Any]]:
    """Numbered lines, each with the findings that point at it; `risk` when one is not a mere strategy."""
    at: dict[int, list[Finding]] = {}
    for finding in findings:
        for line in finding.lines:
            at.setdefault(line, []).append(finding)
    return [
        {
            "number": number,
            "text": text,
            "labels": sorted({f.label for f in at.get(number, [])}),
            "risk": any(f.kind != "strategy" for f in at.get(number, [])),
        }
        for number, text in enumerate(source.splitlines(), start=1)
    ]


def _with_downstream(reader: PageReader, run_id: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each improver run with the solutions it tried (scores, invalid outputs, first problem) and its events."""
    ids = [row["id"] for row in runs]
    evaluations = reader.improver_run_evaluations(run_id, ids) if ids else []
    events = reader.improver_run_events(run_id, ids) if ids else []
    shown = []
    for row in runs:
        solutions: dict[str, dict[str, Any]] = {}
        for evaluation in (e for e in evaluations if e["improver_run_id"] == row["id"]):
            solution = solutions.setdefault(
                evaluation["solution_hash"],
                {"hash": evaluation["solution_hash"], "scores": {}, "invalid": 0, "instances": 0, "problem": None,
                 "failure": None, "violations": [], "scorer_errors": 0},
            )  # fmt: skip
            solution["scores"].setdefault(evaluation["split"], fields.number(evaluation["score"]))
            invalid = fields.count(evaluation["invalid"])
            if not solution["instances"] or invalid > solution["invalid"]:  # the worst split, as audit
                solution["invalid"], solution["instances"] = invalid, fields.count(evaluation["instances"])
            solution["problem"] = solution["problem"] or fields.text(evaluation["problem"])
            solution["failure"] = solution["failure"] or fields.text(evaluation["failure"])
            solution["scorer_errors"] += fields.count(evaluation["scorer_errors"])
            solution["violations"] += [
                str(violation.get("kind")) if isinstance(violation, dict) else str(fields.MALFORMED)
                for violation in fields.sequence(evaluation["violations"])
            ]
        for solution in solutions.values():
            solution["returned"] = solution["hash"] == row["solution_hash"]
        shown.append(
            {
                **row,
                "solutions": list(solutions.values()),
                "events": [e for e in events if e["improver_run_id"] == row["id"]],
            }
        )
    return shown
