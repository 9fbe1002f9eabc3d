"""One run of an improver: the improver executes in a sandboxed child, the host serves its language model and utility.

The host holds both budgets. The child's `language_model` and `utility` are proxies whose every
call lands in `_ImproverServices.serve`; whatever the improver does to its own objects, the
numbers here decide.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from selftaught.config import ImproverBudget
from selftaught.errors import ModelOutage
from selftaught.llm.base import Backend
from selftaught.llm.budgeted import BudgetedLanguageModel, LanguageModelRefusal
from selftaught.llm.circuit_breaker import CircuitBreaker
from selftaught.llm.pricing import CostMeter, PriceTable
from selftaught.llm.sdk_errors import short
from selftaught.loop.recording import RunRecorder
from selftaught.loop.seed_improver import IMPROVER_ENTRY_POINT
from selftaught.loop.seeds import SeedSequence
from selftaught.loop.stats import RunStats
from selftaught.sandbox.child import protocol
from selftaught.sandbox.child.helpers import extract_code
from selftaught.sandbox.executor import JobRunner
from selftaught.sandbox.launcher import CallRefused
from selftaught.sandbox.outcome import ChildOutcome, SandboxLimits
from selftaught.store.rows import CallRow

IMPROVER_MEMORY_BYTES = 4 * 1024**3
#: Longest program an improver may return or score; every program is stored, so this bounds the store.
MAX_PROGRAM_CHARS = 200_000

#: Scores a solution for an improver run (whose store id is given, to link the records).
ScoreFunction = Callable[[str, int], float]


@dataclass(frozen=True)
class UtilityService:
    """A utility as an improver sees it: the description it reads as `utility.str`, and a hidden scorer.

    `prefetch`, when given, is told about every program a language model proposes (and the improver
    run it was proposed to), so that it can start scoring before the improver asks.
    """

    description: str
    budget: int
    score: ScoreFunction
    prefetch: Callable[[str, int], None] | None = None


@dataclass(frozen=True)
class ImproverRunResult:
    improver_run_id: int
    solution: str | None
    error: str | None
    lm_calls: int
    lm_responses: int
    utility_calls: int
    seconds: float
    #: USD its live language-model calls cost.
    cost_usd: float = 0.0


@dataclass(frozen=True)
class ModelAccess:
    """The language model as improver runs reach it: the backend, what its calls cost, and the breaker that stops them."""

    backend: Backend
    prices: PriceTable
    #: The run's spending so far, and its limit.
    meter: CostMeter
    #: Trips when the model cannot answer at all; the loop then stops the run (`ModelOutage`).
    breaker: CircuitBreaker


@dataclass(frozen=True)
class ImproverRunner:
    """Runs improvers in sandboxed children, serving each one's language model and utility from the host."""

    jobs: JobRunner
    model: ModelAccess
    recorder: RunRecorder
    stats: RunStats
    #: The budgets of an improver run unless `run` is given others.
    budget: ImproverBudget

    def with_model(self, model: ModelAccess) -> ImproverRunner:
        """The same runner with improvers' calls answered by another model (the unsandboxing experiment's canned one)."""
        return ImproverRunner(self.jobs, model, self.recorder, self.stats, self.budget)

    def run(
        self,
        improver: str,
        *,
        initial_solution: str,
        utility: UtilityService,
        purpose: str,
        parent_id: int | None,
        seed: int,
        budget: ImproverBudget | None = None,
    ) -> ImproverRunResult:
        """Runs `improve_algorithm(initial_solution, utility, language_model)` from `improver` with fresh budgets."""
        budget, recorder = budget or self.budget, self.recorder
        improver_run_id = recorder.start_improver_run(
            purpose=purpose, improver=improver, initial_solution=initial_solution, parent_id=parent_id
        )
        seeds = SeedSequence(seed)
        services = _ImproverServices(self, utility, budget, improver_run_id, seeds)
        started = time.monotonic()
        job = {
            "job": "improver",
            "source": improver,
            "entry_point": IMPROVER_ENTRY_POINT,
            "initial_solution": initial_solution,
            "utility": {"str": utility.description, **services.utility_state()},
            "language_model": services.language_model.state(),
            "seed": seeds(),
        }
        limits = SandboxLimits(
            wall_seconds=budget.own_seconds,
            cpu_seconds=int(budget.own_seconds),
            address_space_bytes=IMPROVER_MEMORY_BYTES,
        )
        outcome = self.jobs.run(job, limits, serve=services.serve)
        _record_events(recorder, improver_run_id, outcome)
        # An improver that caught the model's errors and returned anyway ran on a model that was out:
        # its result is not the one the run would have had.
        self.model.breaker.check()
        solution, error = _solution_of(outcome.result, outcome.problem)
        model = services.language_model
        seconds = time.monotonic() - started
        recorder.finish_improver_run(
            improver_run_id,
            solution=solution,
            solution_kind="improver" if purpose == "self-improvement" else "solution",
            error=error,
            lm_calls=model.calls_used,
            lm_responses=model.responses_received,
            utility_calls=services.utility_uses,
            seconds=seconds,
        )
        return ImproverRunResult(
            improver_run_id,
            solution,
            error,
            model.calls_used,
            model.responses_received,
            services.utility_uses,
            seconds,
            services.cost_usd,
        )


class _ImproverServices:
    def __init__(
        self,
        runner: ImproverRunner,
        utility: UtilityService,
        budget: ImproverBudget,
        improver_run_id: int,
        seeds: SeedSequence,
    ) -> None:
        self._model = runner.model
        self._recorder = runner.recorder
        self._stats = runner.stats
        self._utility = utility
        self._improver_run_id = improver_run_id
        self.utility_uses = 0
        self.cost_usd = 0.0
        self.language_model = BudgetedLanguageModel(
            runner.model.backend,
            budget=budget.language_model_calls,
            max_responses_per_call=budget.responses_per_call,
            max_tokens=budget.max_tokens,
            next_seed=seeds,
            on_call=self._record_call,
            prices=runner.model.prices,
            meter=runner.model.meter,
        )

    def _record_call(self, call: CallRow) -> None:
        cost = call.cost_usd or 0.0
        self._stats.add(
            lm_responses=len(call.responses),
            cost_usd=cost,
            replayed_lm_calls=int(call.replayed),
            attempt_cost_usd=0.0 if call.replayed else cost,
        )
        self.cost_usd += call.cost_usd or 0.0
        self._recorder.language_model_call(self._improver_run_id, call)
        if self._utility.prefetch is not None:
            for program in extract_code(list(call.responses)):
                if program and len(program) <= MAX_PROGRAM_CHARS:  # a longer one scores 0, unrun and unstored
                    self._utility.prefetch(program, self._improver_run_id)

    def utility_state(self) -> dict[str, Any]:
        return {"budget": self._utility.budget, "uses": self.utility_uses}

    def serve(self, method: str, params: dict[str, Any]) -> Any:
        # Once the model is out, no call of the child is answered: the ModelOutage (not a refusal the
        # child could catch) ends its job, and the run stops where it is.
        self._model.breaker.check()
        try:
            return self._serve(method, params)
        except (CallRefused, ModelOutage):
            raise
        # A service's own failure (a backend's bug, a full disk) is an error of the call, never the end of the run.
        except Exception as error:
            self._model.breaker.check()
            refusal = short(f"the service {method[:80]} failed: {type(error).__name__}: {error}")
            with contextlib.suppress(Exception):  # the store may be what failed
                self._recorder.event(self._improver_run_id, "service_error", {"error": refusal})
            raise CallRefused(refusal) from None

    def _serve(self, method: str, params: dict[str, Any]) -> Any:
        if method == "utility":
            if params.get("sandbox_off_requested") is True:
                self._recorder.event(
                    self._improver_run_id,
                    "sandbox_off_requested",
                    {"arguments": str(params.get("extra_arguments"))[:200]},
                )
            return {"score": self._score(params.get("solution")), "state": self.utility_state()}
        model = self.language_model
        calls_before = model.calls_used
        try:
            if method == "language_model.batch_prompt":
                responses = model.batch_prompt(
                    params.get("expertise"), params.get("messages"), params.get("temperature", 0.7)
                )
            elif method == "language_model.prompt":
                responses = model.prompt(
                    params.get("expertise"),
                    params.get("message"),
                    params.get("n_responses", 1),
                    params.get("temperature", 0.7),
                )
            else:
                raise CallRefused(f"no such service: {method[:80]}")
        except LanguageModelRefusal as refusal:
            self._model.breaker.check()
            raise CallRefused(str(refusal)) from None
        finally:
            self._stats.add(lm_calls=model.calls_used - calls_before)
        return {"responses": responses, "state": model.state()}

    def _score(self, solution: Any) -> float:
        # As in the paper: past the budget the utility is 0, and so is it, free of charge, for no program at all.
        if self.utility_uses >= self._utility.budget or not isinstance(solution, str) or not solution.strip():
            return 0.0
        self.utility_uses += 1
        self._stats.add(utility_calls=1)
        if len(solution) > MAX_PROGRAM_CHARS:  # scored 0 unrun and unstored: the store must not grow by megabytes
            return 0.0
        return self._utility.score(solution, self._improver_run_id)


def _record_events(recorder: RunRecorder, improver_run_id: int, outcome: ChildOutcome) -> None:
    for event in outcome.events:
        if event["name"] != "sandbox_violation":
            recorder.event(improver_run_id, event["name"], {"detail": event["detail"]})
    for violation in outcome.violations:
        recorder.event(improver_run_id, "sandbox_violation", violation)


def _solution_of(value: Any, problem: str | None) -> tuple[str | None, str | None]:
    if problem is not None:
        return None, f"the improver failed: {problem}"
    if isinstance(value, str) and len(value) > MAX_PROGRAM_CHARS:
        return None, f"the improver returned {len(value)} characters; a program may have at most {MAX_PROGRAM_CHARS}"
    if isinstance(value, str) and value.strip():
        return value, None
    if value is None:
        return None, "the improver returned None (did any response contain a code block?)"
    if isinstance(value, str):
        return None, "the improver returned an empty string"
    if isinstance(value, dict) and protocol.UNREPRESENTABLE_TAG in value:
        return None, f"the improver returned an object of type {value[protocol.UNREPRESENTABLE_TAG]}, not a program"
    return None, f"the improver returned a {type(value).__name__}, not a program"
