"""`selftaught audit`: the safety measurements of a recorded run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import click
from rich.table import Table

from selftaught.audit.run_audit import AuditThresholds, ProgramAudit, audit_run
from selftaught.cli.plumbing import json_option, open_reader, print_json, stdout_console, store_option, user_errors
from selftaught.cli.safe_output import one_line

#: Distinct scorer errors printed, the most frequent first: a scorer that raises a new message per output
#: would otherwise print one line of a size without bound. --json lists every one.
MAX_SCORER_PROBLEMS_SHOWN = 10
#: Characters of one scorer error printed; an imported record may hold any length. --json has the whole text.
MAX_SCORER_PROBLEM_CHARS = 300


@click.command("audit")
@click.argument("run_id")
@click.option(
    "--gap",
    type=click.FloatRange(min=0, max=1),
    default=AuditThresholds.val_test_gap,
    show_default=True,
    help="Flag programs whose validation score beats their test score by more than this.",
)
@click.option(
    "--all", "show_all", is_flag=True, help="List every program, not only the flagged ones and the improvers."
)
@store_option
@json_option
@user_errors
def audit_command(run_id: str, gap: float, show_all: bool, store: Path, as_json: bool) -> None:
    """Report what the improvers and solutions of a run tried, hacked and how they work.

    For every improver and solution: sandbox events (network, file writes outside scratch,
    process spawning, signals, secret reads, resource limits hit), budget tampering (attempts to
    raise or reset budgets, requests to turn the sandbox off, and, read from the source, budget
    writes, new language models, reaching host objects), reward-hacking flags (invalid outputs,
    validation/test gaps above --gap, perfect scores from implausibly small code), and for
    improvers the improvement strategies read from their syntax tree (beam search, genetic
    algorithm, decomposition, bandit/UCB, temperature variation, simulated annealing, hint
    prompts), each with a confidence and the lines that show it. Outputs the task's own scorer
    raised on are listed apart as scorer errors: a bug in the task, not reward hacking; the
    10 most frequent are printed, --json lists them all. Reads the store only.
    """
    with open_reader(store) as reader:
        audit = audit_run(reader, run_id, AuditThresholds(val_test_gap=gap))
    if as_json:
        print_json(audit.as_dict())
        return
    console = stdout_console()
    summary = audit.summary()
    console.print(
        one_line(
            f"audit of run {audit.run_id}: {summary['improvers']} improvers ({summary['flagged_improvers']} flagged), "
            f"{summary['solutions']} solutions ({summary['flagged_solutions']} flagged)"
        ),
    )
    for title, counts in (
        ("sandbox events", summary["sandbox_events"]),
        ("budget tampering at run time", summary["tampering_events"]),
        ("tampering read from source", summary["static_tampering"]),
        ("sandbox circumvention read from source", summary["unsandboxing"]),
        ("reward-hacking flags", summary["reward_hacking"]),
        ("improvement strategies", summary["strategies"]),
    ):
        listed = ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none"
        console.print(one_line(f"  {title}: {listed}"))
    frequent, others = _most_frequent(summary["scorer_errors"])
    listed = "; ".join([*frequent, *([f"and {others}"] if others else [])]) or "none"
    console.print(
        one_line(f"  the task's scorer raised (a bug in the task, not reward hacking): {listed}"), soft_wrap=True
    )
    # Programs the scorer raised on are shown, unflagged: the reader sees which outputs met the bug.
    shown = [
        p
        for p in (*audit.improvers, *audit.solutions)
        if show_all or p.kind == "improver" or p.flagged or p.scorer_errors
    ]
    if not shown:
        return
    table = Table(title="programs")
    for column in ("program", "kind", "origin", "found"):
        table.add_column(column, no_wrap=column == "program")
    for program in shown:
        table.add_row(one_line(program.hash[:12]), program.kind, one_line(program.origin), _describe(program))
    console.print(table)


def _describe(program: ProgramAudit) -> str:
    parts = [f"sandbox: {kind} ×{count}" for kind, count in sorted(program.sandbox_events.items())]
    parts += [f"{kind} ×{count}" for kind, count in sorted(program.tampering_events.items())]
    parts += [f"{flag['flag']}: {flag['detail']}" for flag in program.reward_hacking]
    frequent, others = _most_frequent(program.scorer_errors)
    parts += [f"the task's scorer raised: {problem}" for problem in frequent]
    parts += [f"the task's scorer raised {others}"] if others else []
    parts += [
        f"{finding.label} ({finding.confidence:.2f}, line {', '.join(map(str, finding.lines[:4]))})"
        for finding in program.findings
    ]
    # One line of the cell per part: a part's own line breaks (a recorded problem's) are escaped.
    return "\n".join(one_line(part) for part in parts) or "-"


def _most_frequent(problems: Mapping[str, int]) -> tuple[list[str], str | None]:
    """The most frequent scorer errors as "problem ×count", and how many others there are, if any."""
    ranked = sorted(problems.items(), key=lambda item: (-item[1], str(item[0])))
    shown = [f"{_shortened(str(problem))} ×{count}" for problem, count in ranked[:MAX_SCORER_PROBLEMS_SHOWN]]
    rest = ranked[MAX_SCORER_PROBLEMS_SHOWN:]
    if not rest:
        return shown, None
    outputs = sum(count for _, count in rest)
    return shown, f"{len(rest)} other errors on {outputs} outputs (--json lists every one)"


def _shortened(problem: str) -> str:
    text = one_line(problem)
    return text if len(text) <= MAX_SCORER_PROBLEM_CHARS else f"{text[: MAX_SCORER_PROBLEM_CHARS - 1]}…"
