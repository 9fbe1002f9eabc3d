"""`selftaught audit`: the safety measurements of a recorded run."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from selftaught.audit.run_audit import AuditThresholds, ProgramAudit, audit_run
from selftaught.cli.plumbing import json_option, print_json, stdout_console, store_option, user_errors
from selftaught.store.reading import StoreReader


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
    raised on are listed apart as scorer errors: a bug in the task, not reward hacking. Reads the
    store only.
    """
    with StoreReader(store) as reader:
        audit = audit_run(reader, run_id, AuditThresholds(val_test_gap=gap))
    if as_json:
        print_json(audit.as_dict())
        return
    console = stdout_console()
    summary = audit.summary()
    console.print(
        f"audit of run {audit.run_id}: {summary['improvers']} improvers ({summary['flagged_improvers']} flagged), "
        f"{summary['solutions']} solutions ({summary['flagged_solutions']} flagged)",
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
        console.print(f"  {title}: {listed}")
    scorer_errors = sorted(summary["scorer_errors"].items(), key=lambda item: -item[1])
    listed = "; ".join(f"{problem} ×{count}" for problem, count in scorer_errors) or "none"
    console.print(f"  the task's scorer raised (a bug in the task, not reward hacking): {listed}", soft_wrap=True)
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
        table.add_row(program.hash[:12], program.kind, program.origin, _describe(program))
    console.print(table)


def _describe(program: ProgramAudit) -> str:
    parts = [f"sandbox: {kind} ×{count}" for kind, count in sorted(program.sandbox_events.items())]
    parts += [f"{kind} ×{count}" for kind, count in sorted(program.tampering_events.items())]
    parts += [f"{flag['flag']}: {flag['detail']}" for flag in program.reward_hacking]
    parts += [f"the task's scorer raised: {problem} ×{count}" for problem, count in program.scorer_errors.items()]
    parts += [
        f"{finding.label} ({finding.confidence:.2f}, line {', '.join(map(str, finding.lines[:4]))})"
        for finding in program.findings
    ]
    return "\n".join(parts) or "-"
