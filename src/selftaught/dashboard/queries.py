"""What the runs list, a run's page, its calls and a comparison show, read from the store through its reader."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selftaught.cli.runs_command import RESUMABLE, run_summary
from selftaught.dashboard import fields
from selftaught.dashboard.charts import Chart, Series, line_chart
from selftaught.dashboard.reader import PageReader, RunsQuery, fingerprint
from selftaught.errors import SelftaughtError
from selftaught.report.plot import mean_curve
from selftaught.report.views import run_curve, run_view

RUNS_PER_PAGE = 50
CALLS_PER_PAGE = 20
#: Iterations a run's table shows a page (Figure 4 draws them all, thinned).
ITERATIONS_PER_PAGE = 100
#: Characters of a prompt or a response the calls page shows; the call's own page shows all of it.
SHOWN_CHARACTERS = 20_000
#: Runs drawn on one comparison at most: more make an unreadable chart and a slow page.
MAX_COMPARED = 20
#: Levels of nested settings a run's page unfolds; deeper ones are shown as JSON.
SETTINGS_DEPTH = 6


def runs_page(reader: PageReader, query: RunsQuery) -> dict[str, Any]:
    """One page of the store's runs, filtered and sorted, with the choices the filters offer."""
    listing = reader.runs_listing(query, RUNS_PER_PAGE)
    return {
        **listing,
        "runs": [_listed(row) for row in listing["runs"]],
        "query": query,
        "version": reader.runs_version(),
    }


def _listed(row: dict[str, Any]) -> dict[str, Any]:
    """A listed run as `selftaught runs` summarizes it, with its best scores."""
    config = {"name": row["profile"], "iterations": row["iterations_planned"]}
    summary = run_summary({**row, "config": config, "iteration_rows": row["iterations"], "best_val": row["best_val"]})
    return {**summary, "best_val": row["best_val"], "best_test": row["best_test"]}


# --- one run -------------------------------------------------------------------------------------


def run_page(reader: PageReader, run: dict[str, Any], store: Path, page: int) -> dict[str, Any]:
    """A run's record: summary, Figure 4, iterations, cost and calls over time, budgets, options, commands."""
    view = run_view(reader, run["id"])
    cost_chart, calls_chart, untimed = _timeline_charts(view["started_at"], reader.lm_call_timeline(view["id"]))
    pages = max(1, math.ceil(len(view["iterations"]) / ITERATIONS_PER_PAGE))
    page = min(max(1, page), pages)
    profile = fields.mapping(view["profile"])
    return {
        "run": view,
        "profile_name": fields.text(profile.get("name")) if "name" in profile else None,
        # The profile is among the options too: shown once, as the budgets.
        "options": _flattened({k: v for k, v in fields.mapping(run.get("options")).items() if k != "profile"}),
        "budgets": _flattened(profile),
        "stopped_by": _why_stopped(view),
        "commands": _commands(view, store),
        "figure": figure_4(view["iterations"]),
        "iterations": view["iterations"][(page - 1) * ITERATIONS_PER_PAGE : page * ITERATIONS_PER_PAGE],
        "page": page,
        "pages": pages,
        "cost_chart": cost_chart,
        "calls_chart": calls_chart,
        "untimed_calls": untimed,
        "version": live_version(reader, view["id"]),
    }


def live_version(reader: PageReader, run_id: str) -> str:
    """Changes whenever a run's pages would: its status, its attempts, or any row it records.

    Cheap enough to be asked every second: the run's row and counts the store's indexes answer.
    """
    run = reader.page_run(run_id)
    return fingerprint([run["status"], run["attempts"], run["finished_at"], reader.progress(run["id"])])


def figure_4(iterations: Sequence[dict[str, Any]]) -> Chart:
    """The paper's Figure 4: the meta-utility of the improver in use after each iteration, validation and test."""
    xs = [row["iteration"] for row in iterations]
    return line_chart(
        "meta-utility per iteration",
        [
            Series("validation", xs, [row["meta_utility_val"] for row in iterations], "val"),
            Series("test", xs, [row["meta_utility_test"] for row in iterations], "test", dashed=True),
        ],
        x_label="iteration",
        y_label="meta-utility",
        integer_x=True,
    )


def _timeline_charts(started_at: Any, timeline: list[dict[str, Any]]) -> tuple[Chart, Chart, int]:
    """Cost and calls, each a running total over the seconds since the run started; and how many calls were left
    out for a time that does not parse (or the run's own)."""
    start = fields.moment(started_at)
    seconds: list[float] = []
    costs: list[float] = []
    counts: list[float] = []
    for count, call in enumerate(timeline, start=1):
        made = fields.moment(call["created_at"])
        if start is None or made is None:
            continue
        seconds.append(max(0.0, (made - start).total_seconds()))
        costs.append((costs[-1] if costs else 0.0) + (fields.finite(call["cost_usd"]) or 0.0))
        counts.append(count)

    def chart(label: str, values: list[float], css: str) -> Chart:
        return line_chart(
            f"{label} over time",
            [Series(label, seconds, values, css, marked=False)],
            x_label="seconds since the run started",
            y_label=label,
            y_from_zero=True,
        )

    return (
        chart("cost (USD)", costs, "cost"),
        chart("language-model calls", counts, "calls"),
        len(timeline) - len(seconds),
    )


def _commands(view: dict[str, Any], store: Path) -> list[tuple[str, str]]:
    """What continues, replays or prints the run, as commands to copy."""
    store_args, run_id = ["--store", str(store)], str(view["id"])
    commands = [("print it", shlex.join(["selftaught", "show", run_id, *store_args]))]
    if view["command"] == "run":
        if view["status"] in RESUMABLE:
            commands.insert(0, ("resume it", shlex.join(["selftaught", "run", "--resume", run_id, *store_args])))
        if view["status"] != "running":
            commands.append(
                ("replay it from its record", shlex.join(["selftaught", "run", "--replay", run_id, *store_args]))
            )
    commands.append(("audit it", shlex.join(["selftaught", "audit", run_id, *store_args])))
    return commands


def _why_stopped(view: dict[str, Any]) -> str | None:
    result = fields.mapping(view["result"])
    if view["status"] == "finished":
        return None
    for key in ("reason", "signal", "error"):
        if result.get(key):
            shown = result[key] if isinstance(result[key], str) else fields.json_text(result[key])
            return f"stopped by {shown}" if key == "signal" else shown
    return None


def _flattened(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Nested settings as (dotted name, value as JSON) rows, unfolded `SETTINGS_DEPTH` levels at most."""
    rows: list[tuple[str, str]] = []
    pending: list[tuple[str, Any, int]] = [(str(key), value, 1) for key, value in reversed(data.items())]
    while pending:  # a stack, not recursion: a record may nest settings far deeper than Python's stack
        name, value, depth = pending.pop()
        if isinstance(value, dict) and value and depth < SETTINGS_DEPTH:
            pending += [(f"{name}.{key}", inner, depth + 1) for key, inner in reversed(value.items())]
        else:
            rows.append((name, value if isinstance(value, str) else fields.json_text(value)))
    return rows


# --- calls and comparisons -----------------------------------------------------------------------


def calls_page(reader: PageReader, run: dict[str, Any], page: int) -> dict[str, Any]:
    """One page of a run's language-model calls, each with its prompt and every response, long texts cut."""
    total = reader.progress(run["id"])["lm_calls"]
    pages = max(1, math.ceil(total / CALLS_PER_PAGE))
    page = min(max(1, page), pages)
    first = (page - 1) * CALLS_PER_PAGE
    calls = reader.lm_call_page(run["id"], first, CALLS_PER_PAGE)
    shown = [_call(call, first + index, SHOWN_CHARACTERS) for index, call in enumerate(calls, start=1)]
    return {"run": run, "calls": shown, "total": total, "page": page, "pages": pages}


def call_page(reader: PageReader, run: dict[str, Any], number: int) -> dict[str, Any] | None:
    """The run's `number`-th call (from 1) with all its text; None when it made fewer."""
    calls = reader.lm_call_page(run["id"], number - 1, 1) if number >= 1 else []
    if not calls:
        return None
    return {"run": run, "call": _call(calls[0], number, None), "calls_page": (number - 1) // CALLS_PER_PAGE + 1}


def _call(call: dict[str, Any], number: int, limit: int | None) -> dict[str, Any]:
    """A call as a page shows it: each field typed, and each text cut at `limit` characters (None: whole)."""
    request = fields.mapping(call["request"])

    def cut(value: Any) -> dict[str, Any]:
        whole = value if isinstance(value, str) else "" if value is None else str(fields.MALFORMED)
        shown = whole if limit is None else whole[:limit]
        return {"text": shown, "length": len(whole), "cut": len(shown) < len(whole)}

    return {
        **call,
        "number": number,
        "n": fields.number(request.get("n")),
        "temperature": fields.number(request.get("temperature")),
        "system": cut(request.get("system")),
        "message": cut(request.get("message")),
        "responses": [cut(response) for response in fields.sequence(call["responses"])],
    }


def compare_page(reader: PageReader, run_ids: Sequence[str]) -> dict[str, Any]:
    """Several runs' Figure 4 on one chart: each run faint, their mean ± standard error in bold."""
    chosen = list(dict.fromkeys(run_ids))[:MAX_COMPARED]
    curves, skipped = [], []
    for run_id in chosen:
        try:
            curves.append(run_curve(reader, run_id))
        except (SelftaughtError, TypeError, ValueError) as error:  # a missing run, or values no curve can hold
            skipped.append(f"run {run_id!r}: {error}")
    series: list[Series] = []
    for curve in curves:
        series.append(Series(curve.run_id, curve.iterations, curve.val, "val", marked=False, faint=True))
        series.append(Series(curve.run_id, curve.iterations, curve.test, "test", dashed=True, marked=False, faint=True))
    if curves:
        try:
            mean = mean_curve(curves)
        except (SelftaughtError, ArithmeticError) as error:  # values so large that their sum overflows
            skipped.append(f"no mean drawn: {error or type(error).__name__}")
        else:
            series.append(Series("validation mean ± SE", mean.iterations, mean.val_mean, "val", spread=mean.val_stderr))
            series.append(
                Series("test mean ± SE", mean.iterations, mean.test_mean, "test", dashed=True, spread=mean.test_stderr)
            )
    chart = line_chart(
        f"{len(curves)} runs compared", series, x_label="iteration", y_label="meta-utility", integer_x=True
    )
    return {"curves": curves, "skipped": skipped, "chart": chart, "limit": MAX_COMPARED}
