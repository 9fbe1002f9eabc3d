"""The STOP loop: I_t = I_{t-1}(û, I_{t-1}, L), keeping I_t only when its meta-utility beats I_{t-1}'s.

The reference code keeps any candidate with a non-zero meta-utility; here a candidate must do
strictly better on validation, and both are recorded. Test scores are computed for reporting
only; no improver ever sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from selftaught.loop.meta_utility import CandidateScores
from selftaught.loop.seed_improver import SEED_IMPROVER
from selftaught.loop.services import RunServices
from selftaught.store.run_store import program_hash


@dataclass(frozen=True)
class IterationResult:
    """Iteration t: the improver kept after it, its meta-utility, and the candidate that was tried."""

    iteration: int
    improver: str
    meta_utility_val: float
    meta_utility_test: float
    accepted: bool
    candidate: str | None = None
    candidate_val: float | None = None
    candidate_test: float | None = None
    error: str | None = None
    #: The improver run that produced the candidate: its lineage in the store.
    improver_run_id: int | None = None

    def as_row(self) -> dict[str, object]:
        return {
            "iteration": self.iteration,
            "improver_hash": program_hash(self.improver),
            "meta_utility_val": self.meta_utility_val,
            "meta_utility_test": self.meta_utility_test,
            "accepted": self.accepted,
            "candidate_hash": program_hash(self.candidate) if self.candidate is not None else None,
            "candidate_val": self.candidate_val,
            "candidate_test": self.candidate_test,
            "error": self.error,
        }


def self_improve(
    run: RunServices,
    *,
    initial_improver: str = SEED_IMPROVER,
    completed: Sequence[IterationResult] = (),
    speculate: bool = False,
    resumed_iteration_started: bool = False,
) -> list[IterationResult]:
    """Runs T iterations of self-improvement; a failing candidate is recorded and the run goes on.

    `completed` are the iterations a resumed run recorded before it stopped; the loop goes on
    after the last of them. Each iteration draws its seeds afresh from the run's seed and its
    number, so it asks the same questions whether or not the run stopped before it. With
    `speculate`, candidates are scored as soon as they are proposed (CandidateScores): the same
    scores, sooner, and candidates the improver never asks about are paid for and counted apart.
    `resumed_iteration_started`: the iteration after `completed` had started before the run stopped.
    """
    stats = run.stats
    stats.iterations = run.profile.iterations

    results = list(completed)
    if not results:
        stats.stage = "scoring the seed improver"
        run.seeds.restart(0)
        scored = run.meta_utility.evaluate(initial_improver, with_test=True)
        results.append(IterationResult(0, initial_improver, scored.val, scored.test or 0.0, accepted=True))
        _record(run, results[0])
    current = results[-1]

    # A resumed run's meter holds all it paid: the iteration it was in, started under the limit, is finished
    # as the first attempt would have finished it (its calls past the limit are refused as they were).
    started = current.iteration + 1 if completed and resumed_iteration_started else None
    for iteration in range(current.iteration + 1, run.profile.iterations + 1):
        if run.meter.exhausted and iteration != started:  # stop between iterations: each one recorded is complete
            stats.stage = "cost limit reached"
            return results
        current = _iteration(run, current, iteration, speculate)
        results.append(current)
        _record(run, current)
    stats.stage = "done"
    return results


def _iteration(run: RunServices, current: IterationResult, iteration: int, speculate: bool) -> IterationResult:
    """The current improver improves itself once; its candidate is kept only if it scores higher."""
    stats, seeds = run.stats, run.seeds
    seeds.restart(iteration)
    stats.iteration = iteration
    stats.stage = "improving the improver"
    scores = CandidateScores(
        run.meta_utility,
        budget=run.profile.meta_utility_calls,
        seeds=seeds,
        recorder=run.recorder,
        stats=stats,
        speculate=speculate,
    )
    attempt = run.improvers.run(
        current.improver,
        initial_solution=current.improver,
        utility=scores.service(),
        purpose="self-improvement",
        parent_id=None,
        seed=seeds(),
    )
    scores.finish(attempt.improver_run_id)
    if attempt.solution is None:
        return IterationResult(
            iteration,
            current.improver,
            current.meta_utility_val,
            current.meta_utility_test,
            accepted=False,
            error=f"no candidate: {attempt.error}",
            improver_run_id=attempt.improver_run_id,
        )
    stats.stage = "scoring the candidate improver"
    candidate = run.meta_utility.evaluate(attempt.solution, with_test=True, parent_id=attempt.improver_run_id)
    accepted = candidate.val > current.meta_utility_val
    kept = (
        (attempt.solution, candidate.val, candidate.test or 0.0)
        if accepted
        else (current.improver, current.meta_utility_val, current.meta_utility_test)
    )
    failed_runs = [each.improver_run.error for each in candidate.runs if each.improver_run.error]
    return IterationResult(
        iteration,
        *kept,
        accepted=accepted,
        candidate=attempt.solution,
        candidate_val=candidate.val,
        candidate_test=candidate.test,
        error=f"candidate: {failed_runs[0]}" if len(failed_runs) == len(candidate.runs) else None,
        improver_run_id=attempt.improver_run_id,
    )


def _record(run: RunServices, result: IterationResult) -> None:
    run.stats.meta_utility_val = result.meta_utility_val
    run.stats.meta_utility_test = result.meta_utility_test
    run.recorder.save_program(result.improver, "improver")
    run.recorder.iteration(
        {**result.as_row(), "improver_run_id": result.improver_run_id, "spent_usd": run.meter.spent_usd}
    )
