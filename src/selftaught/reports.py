"""What the API's commands return: plain, frozen results of recorded runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from selftaught.llm.concurrency import Throttling
from selftaught.loop.self_improvement import IterationResult
from selftaught.options import RunOptions


@dataclass(frozen=True)
class ImproveResult:
    run_id: str
    algorithm: str | None
    utility_val: float
    utility_test: float
    initial_utility_val: float
    lm_calls: int
    lm_responses: int
    utility_calls: int
    error: str | None
    cost_usd: float
    #: Calls of a model without a price: what they cost is unknown, so it is not in `cost_usd`.
    unpriced_calls: int = 0
    #: Outputs the task's own scorer raised on (a bug in the scorer; they score 0), and each distinct error
    #: with the outputs it was raised on.
    scorer_errors: int = 0
    scorer_problems: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class MetaUtilityReport:
    run_id: str
    meta_utility_val: float
    meta_utility_test: float
    runs: tuple[dict[str, Any], ...]
    cost_usd: float
    #: Calls of a model without a price: what they cost is unknown, so it is not in `cost_usd`.
    unpriced_calls: int = 0


@dataclass(frozen=True)
class BestSolution:
    """The best downstream solution a run found: chosen by validation score, with its test score for reporting."""

    source: str
    hash: str
    utility_val: float
    utility_test: float
    #: The improver run that produced or tried it (None: the task's seed solution, scored by the run itself).
    improver_run_id: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "utility_val": self.utility_val,
            "utility_test": self.utility_test,
            "improver_run_id": self.improver_run_id,
            "source": self.source,
        }


@dataclass(frozen=True)
class RunReport:
    run_id: str
    #: What the run ran with (for a resumed or replayed run: its recorded options).
    options: RunOptions
    iterations: tuple[IterationResult, ...]
    #: USD spent on live language-model calls, and the calls whose model has no price.
    cost_usd: float
    unpriced_calls: int
    #: Why the loop ended before its last iteration, if it did.
    stopped: str | None = None
    #: How often the model's server pushed back on too many requests, and the most the run had in flight.
    throttling: Throttling = field(default_factory=Throttling)
    #: Calls and USD spent on candidates scored ahead (`speculate`) that the improver never asked about.
    speculative_calls: int = 0
    speculative_cost_usd: float = 0.0
    #: Outputs the task's own scorer raised on in this attempt's evaluations, and each distinct error with its count.
    scorer_errors: int = 0
    scorer_problems: tuple[tuple[str, int], ...] = ()
    #: The best downstream solution of every one the run evaluated on validation.
    best_solution: BestSolution | None = None

    @property
    def final_improver(self) -> str:
        return self.iterations[-1].improver
