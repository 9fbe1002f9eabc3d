"""The paper's tables from the store: transfer (Table 1, with intervals) and the sandbox-circumvention rates."""

from __future__ import annotations

from typing import Any

from selftaught.dashboard import fields
from selftaught.dashboard.reader import PageReader
from selftaught.store.rows import program_hash

TRANSFER = "transfer"
UNSANDBOXING = "experiment unsandboxing"


def transfer_page(reader: PageReader) -> dict[str, Any]:
    """Every transfer run (one per task), grouped by the improver transferred and the model, each cell the
    mean test utility over the repeats with its 95% interval, recomputed from the recorded scores."""
    groups: dict[tuple[str | None, str], list[dict[str, Any]]] = {}
    malformed = []
    for run in reader.runs_of(TRANSFER):
        if "malformed" in run:
            malformed.append(run)
            continue
        improver = fields.mapping(run.get("options")).get("initial_improver_hash")
        improver = improver if isinstance(improver, str) else None  # anything else is no program's hash
        groups.setdefault((improver, str(run["model"])), []).append(_transfer_row(reader, run, improver))
    return {
        "groups": [{"improver": improver, "model": model, "rows": rows} for (improver, model), rows in groups.items()],
        "malformed": malformed,
    }


def _transfer_row(reader: PageReader, run: dict[str, Any], improver: str | None) -> dict[str, Any]:
    """The run's three estimates from its record: what `transfer` scored, as it scored it (loop/transfer.py)."""
    # The run machinery (numpy among it) loads only for this page, and only once.
    from selftaught.loop.seed_improver import SEED_IMPROVER
    from selftaught.loop.transfer import Estimate

    evaluations = reader.evaluations(run["id"])
    originals = [e["score"] for e in evaluations if e["improver_run_id"] is None and e["split"] == "test"]
    scored = {
        e["improver_run_id"]: e["score"]
        for e in evaluations
        if e["split"] == "test" and e["improver_run_id"] is not None
    }
    improved = [row for row in reader.improver_runs(run["id"]) if row["purpose"] == TRANSFER and row["finished_at"]]
    # Each repeat's improver run scored the solution it returned on test; one that returned nothing scored 0.
    samples = [(row["improver_hash"], scored.get(row["id"], 0.0) if row["solution_hash"] else 0.0) for row in improved]
    seed_hash = program_hash(SEED_IMPROVER)
    if improver is None or improver == seed_hash:
        # The same improver twice: the seed improver's repeats all ran first.
        half = len(samples) // 2
        seeded, given = [s for _, s in samples[:half]], [s for _, s in samples[half:]]
    else:
        seeded = [s for h, s in samples if h == seed_hash]
        given = [s for h, s in samples if h == improver]

    def estimate(values: list[Any]) -> Estimate | fields.Malformed | None:
        """The estimate of finite scores; malformed when one is not a finite number, or the arithmetic overflows."""
        numbers = [number for number in map(fields.finite, values) if number is not None]
        if not values:
            return None
        try:
            return Estimate.of(numbers) if len(numbers) == len(values) else fields.MALFORMED
        except (ArithmeticError, ValueError):
            return fields.MALFORMED

    return {"run": run, "cells": [estimate(values) for values in (originals, seeded, given)], "repeats": len(originals)}


def unsandboxing_page(reader: PageReader) -> dict[str, Any]:
    """Every sandbox-circumvention experiment: its counts, rate and 95% Wilson interval as it recorded them."""
    runs = reader.runs_of(UNSANDBOXING)
    return {
        "runs": [{"run": run, "result": _result(run["result"])} for run in runs if "malformed" not in run],
        "malformed": [run for run in runs if "malformed" in run],
    }


def _result(recorded: Any) -> dict[str, Any] | None:
    """The experiment's result as the page shows it, each field checked (see experiments/unsandboxing.py)."""
    if not isinstance(recorded, dict):
        return None
    interval = recorded.get("interval_95")
    warning = recorded.get("warning")
    paper = fields.mapping(fields.mapping(recorded.get("paper")).get("gpt-4"))
    return {
        "warning": warning if isinstance(warning, bool) else fields.MALFORMED,
        "improvers": fields.number(recorded.get("improvers")),
        "disabled": fields.number(recorded.get("disabled")),
        "rate": fields.number(recorded.get("rate")),
        "interval_95": [fields.number(bound) for bound in interval]
        if isinstance(interval, list) and len(interval) == 2
        else None,
        "runtime_requests": fields.number(recorded.get("runtime_requests")),
        "paper_rate": fields.number(paper.get("with_warning" if warning is True else "without_warning")),
        "examples": [
            {"labels": fields.texts(example.get("labels")), "lines": fields.texts(example.get("lines"))}
            if isinstance(example, dict)
            else {"labels": [str(fields.MALFORMED)], "lines": []}
            for example in fields.sequence(recorded.get("examples"))
        ],
    }
