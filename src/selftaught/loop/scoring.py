"""Scoring downstream solutions: evaluations of the run's task, recorded, and the task utility improvers call.

Also the one way of running an improver on a solution and scoring what it returns, which the
meta-utility, `improve`, transfer and the unsandboxing experiment all do.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from selftaught.loop.improver_run import ImproverRunner, ImproverRunResult, UtilityService
from selftaught.loop.recording import RunRecorder
from selftaught.loop.stats import RunStats
from selftaught.tasks.base import VALIDATION, Task
from selftaught.tasks.evaluation import Evaluation, Evaluator, evaluation_seed


@dataclass(frozen=True)
class SolutionScorer:
    """Scores solutions of the run's task with its evaluator (the sandbox) and records every evaluation."""

    task: Task
    evaluator: Evaluator
    #: The run's seed: an evaluation's seed derives from it, the program and the split.
    run_seed: int
    recorder: RunRecorder
    stats: RunStats
    #: Evaluates candidates as soon as a language model proposes them, before the improver asks.
    prefetch_pool: ThreadPoolExecutor
    #: Utility calls one improver run may make.
    utility_budget: int

    def evaluate(self, solution: str, split: str, improver_run_id: int | None) -> Evaluation:
        """Scores a solution on a split of the run's task and records the evaluation."""
        return self.record(solution, improver_run_id, self.unrecorded(solution, split))

    def unrecorded(self, solution: str, split: str, seed: int | None = None) -> Evaluation:
        """Scores a solution without recording it; the seed is the run's for this program and split unless given."""
        seed = evaluation_seed(self.run_seed, solution, split) if seed is None else seed
        return self.evaluator.evaluate(self.task, solution, split, seed)

    def record(self, solution: str, improver_run_id: int | None, evaluation: Evaluation) -> Evaluation:
        self.stats.add(evaluations=1)
        self.stats.scorer_errors.add(evaluation)
        self.recorder.evaluation(improver_run_id, solution, evaluation)
        return evaluation

    def utility(self) -> UtilityService:
        """The task's utility on its validation split, as one improver run sees it.

        Candidates are evaluated in the background as soon as the language model proposes them
        (`prefetch`); a utility call then only waits for its result. What the improver never asks
        about is never recorded, and every call still counts against its budget.
        """
        pending: dict[str, Future[Evaluation]] = {}

        def prefetch(solution: str, proposed_to: int) -> None:
            if solution not in pending:
                pending[solution] = self.prefetch_pool.submit(self.unrecorded, solution, VALIDATION)

        def score(solution: str, improver_run_id: int) -> float:
            future = pending.pop(solution, None)
            evaluation = future.result() if future is not None else self.unrecorded(solution, VALIDATION)
            return self.record(solution, improver_run_id, evaluation).score

        return UtilityService(
            description=self.task.description, budget=self.utility_budget, score=score, prefetch=prefetch
        )


@dataclass(frozen=True)
class ImprovedSolution:
    """An improver run on a solution, and the score of what it returned on each split asked for (0 for nothing)."""

    run: ImproverRunResult
    scores: dict[str, float]


def improve_and_score(
    improvers: ImproverRunner,
    scorer: SolutionScorer,
    improver: str,
    *,
    initial_solution: str,
    purpose: str,
    parent_id: int | None,
    seed: int,
    splits: Sequence[str],
) -> ImprovedSolution:
    """Runs `improver` on `initial_solution` with the task's utility, then scores the solution it returns."""
    run = improvers.run(
        improver,
        initial_solution=initial_solution,
        utility=scorer.utility(),
        purpose=purpose,
        parent_id=parent_id,
        seed=seed,
    )
    scores = dict.fromkeys(splits, 0.0)
    if run.solution is not None:
        for split in splits:
            scores[split] = scorer.evaluate(run.solution, split, run.improver_run_id).score
    return ImprovedSolution(run, scores)
