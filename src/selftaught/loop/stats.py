"""A run's live counters, read by the progress display and the summary while the run works."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from selftaught.tasks.evaluation import ScorerErrorTally


@dataclass
class RunStats:
    """Live counters that the progress display reads while the run works; `add` is safe from any thread."""

    started: float = field(default_factory=time.monotonic)
    #: Set once the run is recorded, so that an interrupted command can say how to resume it.
    run_id: str | None = None
    stage: str = "starting"
    iteration: int = 0
    iterations: int = 0
    lm_calls: int = 0
    lm_responses: int = 0
    utility_calls: int = 0
    evaluations: int = 0
    meta_utility_val: float | None = None
    meta_utility_test: float | None = None
    #: What the run has spent, counting what it paid before it was resumed (what its cost limit sees).
    cost_usd: float = 0.0
    #: Of this attempt's calls, those answered from the run's record (resuming it) rather than asked live,
    #: and what this attempt's other calls cost.
    replayed_lm_calls: int = 0
    attempt_cost_usd: float = 0.0
    #: Calls and cost of candidates scored ahead (`--speculate`) that their improver never asked about.
    speculative_calls: int = 0
    speculative_cost_usd: float = 0.0
    #: Outputs the task's own scorer raised on, by what it raised: warned about apart from invalid outputs.
    scorer_errors: ScorerErrorTally = field(default_factory=ScorerErrorTally)

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def elapsed_seconds(self) -> float:
        return time.monotonic() - self.started

    def add(self, **counts: float) -> None:
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)
