"""Transfer, the paper's Table 1: an improver applied unchanged to other tasks, with 95% confidence intervals.

On each task the improver is compared with the task's seed solution and with the seed improver,
each estimated over repeats on the test split.
"""

from __future__ import annotations

import math
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from selftaught.loop.scoring import improve_and_score
from selftaught.loop.seed_improver import SEED_IMPROVER
from selftaught.loop.services import RunServices
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


def transfer_on_task(run: RunServices, improver: str, repeats: int) -> TransferRow:
    """Each repeat gives the seed improver and the improver the same seeds: a paired comparison."""
    seeds = [run.seeds() for _ in range(repeats)]
    scorer, seed_solution = run.scorer, run.task.seed_solution

    def original(seed: int) -> float:
        return scorer.record(seed_solution, None, scorer.unrecorded(seed_solution, TEST, seed)).score

    def improved(source: str, seed: int) -> float:
        return improve_and_score(
            run.improvers,
            scorer,
            source,
            initial_solution=seed_solution,
            purpose="transfer",
            parent_id=None,
            seed=seed,
            splits=(TEST,),
        ).scores[TEST]

    # Improver runs mostly wait for the model; their evaluations are held to the run's workers by its evaluator.
    with ThreadPoolExecutor(max_workers=run.improver_runs, thread_name_prefix="transfer") as pool:
        originals = list(pool.map(original, seeds))
        run.stats.stage = f"{run.task.name}: the seed improver"
        seeded = list(pool.map(lambda seed: improved(SEED_IMPROVER, seed), seeds))
        run.stats.stage = f"{run.task.name}: the improver"
        given = list(pool.map(lambda seed: improved(improver, seed), seeds))
    return TransferRow(run.task.name, run.run_id, Estimate.of(originals), Estimate.of(seeded), Estimate.of(given))
