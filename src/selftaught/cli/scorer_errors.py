"""Warnings about the task's own scorer: what it raised, once per distinct error, on how many outputs.

A scorer that raises is a bug in the task, not a fault of the solution: the output scores 0 and is
counted as a scorer error. The user must hear of it, since every score of the run is lower for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from rich.text import Text

from selftaught.cli.safe_output import one_line, stderr_console
from selftaught.loop.stats import RunStats

#: Distinct errors warned about one by one; a scorer that raises a different message per output is summed up after.
MAX_WARNINGS = 5


@contextlib.contextmanager
def scorer_warnings(stats: RunStats) -> Iterator[None]:
    """Warns about the scorer errors of the run once the body ends, however it ends (done, interrupted, failed)."""
    try:
        yield
    finally:
        # After a SIGHUP the terminal may be gone: the exit must not depend on being able to warn.
        with contextlib.suppress(OSError):
            warn_about_scorer_errors(stats.scorer_errors.problems(), stats.run_id)


def warn_about_scorer_errors(problems: Sequence[tuple[str, int]], run_id: str | None = None) -> None:
    console = stderr_console()
    for problem, outputs in problems[:MAX_WARNINGS]:
        console.print(
            Text.assemble(
                ("warning: ", "bold yellow"),
                # One line per warning, whatever the scorer's message holds: it must not forge lines of its own.
                one_line(
                    f"the task's scorer failed on {_outputs(outputs)}: {problem}; these outputs are scored 0 and "
                    "counted as scorer_errors, not as invalid outputs"
                ),
            ),
            soft_wrap=True,
        )
    rest = problems[MAX_WARNINGS:]
    if rest:
        console.print(
            Text.assemble(
                ("warning: ", "bold yellow"),
                one_line(
                    f"the task's scorer failed in {len(rest)} other ways on {_outputs(sum(n for _, n in rest))}"
                    + (f" (`selftaught audit {run_id}` lists them)" if run_id else "")
                ),
            ),
            soft_wrap=True,
        )


def scorer_errors_json(problems: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """The `scorer_errors` count and its distinct errors, for a command's --json."""
    return {
        "scorer_errors": sum(outputs for _, outputs in problems),
        "scorer_problems": [{"problem": problem, "outputs": outputs} for problem, outputs in problems],
    }


def _outputs(count: int) -> str:
    return f"{count} output" if count == 1 else f"{count} outputs"
