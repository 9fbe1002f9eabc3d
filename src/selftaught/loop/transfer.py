"""Transfer, the paper's Table 1: an improver applied unchanged to other tasks, against the task's seed solution
and the seed improver, each estimated over repeats with a 95% confidence interval on the test split.
"""

from __future__ import annotations

import math
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from selftaught.loop.context import RunContext
from selftaught.loop.improver_run import run_improver
from selftaught.loop.meta_utility import evaluate_solution, record_evaluation, task_utility
from selftaught.loop.seed_improver import SEED_IMPROVER
from selftaught.tasks.base import TEST

#: Student's t quantile for a two-sided 95% interval, by degrees of freedom (1.96 beyond the table).
T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip


@dataclass(frozen=True)
class Estimate:
    """A mean over repeats with its 95% t-interval (a single sample has a zero-width interval)."""

    mean: float
    low: float
    high: float
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: list[float]) -> Estimate:
        mean = statistics.fmean(samples)
        if len(samples) < 2:
            return cls(mean, mean, mean, tuple(samples))
        degrees = len(samples) - 1
        quantile = T_95[max(d for d in T_95 if d <= degrees)] if degrees <= 30 else 1.96
        half = quantile * statistics.stdev(samples) / math.sqrt(len(samples))
        return cls(mean, max(0.0, mean - half), min(1.0, mean + half), tuple(samples))

    @property
    def has_interval(self) -> bool:
        """One sample says nothing about the spread: its zero-width interval is no confidence interval."""
        return len(self.samples) >= 2


@dataclass(frozen=True)
class TransferRow:
    task: str
    run_id: str
    original: Estimate
    seed_improver: Estimate
    improver: Estimate


def transfer_on_task(context: RunContext, improver: str, repeats: int) -> TransferRow:
    """Each repeat gives the seed improver and the improver the same seeds: a paired comparison."""
    seeds = [context.seeds() for _ in range(repeats)]

    def original(seed: int) -> float:
        evaluation = context.evaluator.evaluate(context.task, context.task.seed_solution, TEST, seed)
        return record_evaluation(context, context.task.seed_solution, None, evaluation).score

    def improved(source: str, seed: int) -> float:
        run = run_improver(
            context,
            improver=source,
            initial_solution=context.task.seed_solution,
            utility=task_utility(context),
            purpose="transfer",
            parent_id=None,
            seed=seed,
        )
        if run.solution is None:
            return 0.0
        return evaluate_solution(context, run.solution, TEST, run.improver_run_id).score

    # Improver runs mostly wait for the model; their evaluations are held to the run's workers by its evaluator.
    with ThreadPoolExecutor(max_workers=context.improver_runs, thread_name_prefix="transfer") as pool:
        originals = list(pool.map(original, seeds))
        context.stats.stage = f"{context.task.name}: the seed improver"
        seeded = list(pool.map(lambda seed: improved(SEED_IMPROVER, seed), seeds))
        context.stats.stage = f"{context.task.name}: the improver"
        given = list(pool.map(lambda seed: improved(improver, seed), seeds))
    return TransferRow(
        context.task.name, context.run_id, Estimate.of(originals), Estimate.of(seeded), Estimate.of(given)
    )
