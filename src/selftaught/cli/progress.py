"""Live progress of a long command on stderr: a status line on a terminal, one line per change elsewhere."""

from __future__ import annotations

import threading
from types import TracebackType

from rich.console import Console
from rich.live import Live

from selftaught.cli.safe_output import safe_text
from selftaught.loop.stats import RunStats

POLL_SECONDS = 0.5


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def status_line(stats: RunStats) -> str:
    parts = []
    if stats.iterations:
        parts.append(f"iteration {stats.iteration}/{stats.iterations}")
    parts.append(stats.stage)
    if stats.meta_utility_val is not None:
        parts.append(f"meta-utility val {stats.meta_utility_val:.3f} test {stats.meta_utility_test or 0:.3f}")
    parts.append(f"LM calls {stats.lm_calls} ({stats.lm_responses} responses)")
    parts.append(f"utility calls {stats.utility_calls}")
    parts.append(f"evaluations {stats.evaluations}")
    if scorer_errors := stats.scorer_errors.outputs:  # a bug in the task's scorer shows while the run goes on
        parts.append(f"scorer errors {scorer_errors}")
    if stats.cost_usd:
        parts.append(f"${stats.cost_usd:.4f}")
    parts.append(format_seconds(stats.elapsed_seconds))
    return " · ".join(parts)


class ProgressDisplay:
    """Shows `stats` while the body runs: a live line on a terminal, a line per change of stage otherwise."""

    def __init__(self, stats: RunStats, console: Console) -> None:
        self._stats = stats
        self._console = console
        self._live: Live | None = None
        self._stop = threading.Event()
        self._printer: threading.Thread | None = None

    def __enter__(self) -> ProgressDisplay:
        if self._console.is_terminal:
            self._live = Live(
                get_renderable=lambda: safe_text(status_line(self._stats), style="cyan"),
                console=self._console,
                refresh_per_second=1 / POLL_SECONDS,
                transient=True,
            )
            self._live.start()
        else:
            self._printer = threading.Thread(target=self._print_changes, daemon=True)
            self._printer.start()
        return self

    def _print_changes(self) -> None:
        shown = None
        while not self._stop.wait(POLL_SECONDS):
            key = (self._stats.iteration, self._stats.stage)
            if key != shown:
                shown = key
                self._console.print(status_line(self._stats), highlight=False, soft_wrap=True)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.stop()
        if self._printer is not None:
            self._printer.join(timeout=1)
