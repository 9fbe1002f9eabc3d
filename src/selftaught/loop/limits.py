"""How much of a run goes at once: improver runs as the model and the memory allow, evaluations as the cores do.

Improver runs spend their life waiting for the language model, so as many run at once as the model
serves (its backend's concurrency), within a memory guard, since each is a sandboxed child.
Evaluations of solutions use the CPU, so at most `--workers` run at once, whoever asks for them.
"""

from __future__ import annotations

import contextlib
import os
import threading

from selftaught.errors import SelftaughtError
from selftaught.tasks.base import Task
from selftaught.tasks.evaluation import Evaluation, Evaluator

#: Memory one improver run is taken to need (a sandboxed child; its limit is higher, but few come near it).
IMPROVER_RUN_MEMORY_BYTES = 256 * 1024**2
#: Sets how many improver runs may run at once, whatever the model's concurrency and the memory allow.
MAX_IMPROVER_RUNS_VARIABLE = "SELFTAUGHT_MAX_IMPROVER_RUNS"
#: The guard where the available memory cannot be read (not Linux).
GUARD_WITHOUT_MEMINFO = 8


def available_memory_bytes() -> int | None:
    """What the kernel says can be allocated without swapping (Linux's MemAvailable), or None."""
    with contextlib.suppress(OSError, StopIteration, ValueError):
        with open("/proc/meminfo") as meminfo:
            line = next(line for line in meminfo if line.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    return None


def improver_run_guard() -> int:
    """Improver runs the machine's memory allows at once (or the variable says); the model's concurrency may allow fewer."""
    configured = os.environ.get(MAX_IMPROVER_RUNS_VARIABLE)
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise SelftaughtError(
                f"{MAX_IMPROVER_RUNS_VARIABLE} must be a whole number of at least 1, not {configured[:50]!r}"
            )
        return int(configured)
    available = available_memory_bytes()
    return max(1, available // IMPROVER_RUN_MEMORY_BYTES) if available is not None else GUARD_WITHOUT_MEMINFO


class LimitedEvaluator:
    """Runs at most `workers` evaluations at once: they are CPU-bound, unlike the improver runs that ask for them."""

    def __init__(self, evaluator: Evaluator, workers: int) -> None:
        self._evaluator = evaluator
        self._slots = threading.BoundedSemaphore(max(1, workers))

    def evaluate(self, task: Task, source: str, split: str, seed: int) -> Evaluation:
        with self._slots:
            return self._evaluator.evaluate(task, source, split, seed)
