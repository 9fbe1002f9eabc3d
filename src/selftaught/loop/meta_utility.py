"""The task utility and the meta-utility û(I): the mean validation utility of what improver I returns over D runs."""

from __future__ import annotations

import collections
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from selftaught.config import Profile
from selftaught.loop.improver_run import ImproverRunner, ImproverRunResult, UtilityService
from selftaught.loop.recording import RunRecorder
from selftaught.loop.scoring import SolutionScorer, improve_and_score
from selftaught.loop.seeds import SeedSequence
from selftaught.loop.stats import RunStats
from selftaught.store.run_store import program_hash
from selftaught.tasks.base import TEST, VALIDATION

META_UTILITY_DESCRIPTION = '''\
from algorithm import algorithm_str  # the downstream task's starting solution
from task_utility import utility  # the downstream task's utility
from language_model import LanguageModel

def meta_utility(improve_str: str):
    """
    Scores an improver: runs the improve_algorithm defined in improve_str {runs} times on the
    downstream task, starting from algorithm_str, and returns the mean utility of the
    solutions it returns. Each run gets a fresh language model ({calls} calls, at most
    {responses} responses per call) and a fresh utility budget of {utility_calls} calls.
    This meta-utility function can only be called {meta_calls} times.
    """
    if meta_utility.uses >= meta_utility.budget:
        return 0
    meta_utility.uses += 1
    expected_utility = 0
    for _ in range({runs}):
        try:
            exec(improve_str, globals())  # defines improve_algorithm
        except Exception:
            continue
        language_model = LanguageModel(budget={calls}, max_responses_per_call={responses})
        utility.uses, utility.budget = 0, {utility_calls}
        improved_algorithm_str = improve_algorithm(algorithm_str, utility, language_model)
        expected_utility += utility(improved_algorithm_str) / {runs}
    return expected_utility
'''


def meta_utility_description(profile: Profile) -> str:
    """What an improver of improvers reads as `utility.str`: the meta-utility with the profile's budgets."""
    return META_UTILITY_DESCRIPTION.format(
        runs=profile.meta_utility_runs,
        calls=profile.improver.language_model_calls,
        responses=profile.improver.responses_per_call,
        utility_calls=profile.improver.utility_calls,
        meta_calls=profile.meta_utility_calls,
    )


#: The purpose of an improver run of the meta-utility, and of one started ahead (`--speculate`): a run
#: started ahead counts as the meta-utility's once a `SPECULATION_ASKED` event names it. One whose
#: candidate was never asked about, or whose attempt stopped first, stays speculative.
META_UTILITY = "meta-utility"
SPECULATIVE_META_UTILITY = "speculative meta-utility"
SPECULATION_ASKED = "speculation_asked"


@dataclass(frozen=True)
class MetaUtilityRun:
    """One of the D improver runs, with the utility of the solution it returned (0 when it returned none)."""

    improver_run: ImproverRunResult
    utility_val: float
    utility_test: float | None


@dataclass(frozen=True)
class MetaUtilityResult:
    val: float
    test: float | None
    runs: tuple[MetaUtilityRun, ...]


class MetaUtility:
    """û over the run's task. `evaluate` never raises on a bad improver: a failed run scores 0."""

    def __init__(
        self,
        improvers: ImproverRunner,
        scorer: SolutionScorer,
        profile: Profile,
        seeds: SeedSequence,
        improver_slots: threading.BoundedSemaphore,
    ) -> None:
        self._improvers = improvers
        self._scorer = scorer
        self._profile = profile
        self._seeds = seeds
        #: Held by each improver run, however many meta-utilities are being computed at once.
        self._improver_slots = improver_slots

    @property
    def description(self) -> str:
        return meta_utility_description(self._profile)

    def evaluate(
        self,
        improver: str,
        *,
        with_test: bool,
        parent_id: int | None = None,
        seeds: SeedSequence | None = None,
        purpose: str = META_UTILITY,
    ) -> MetaUtilityResult:
        """Runs the D improver runs, as many at once as the model serves; their seeds are drawn first, in order.

        Seeds come from `seeds`, or else the run's sequence (which only the thread driving the run draws from).
        """
        draw = seeds or self._seeds
        run_seeds = [draw() for _ in range(self._profile.meta_utility_runs)]
        # Every run at once: the run's improver slots, shared by all meta-utilities under way, bound them.
        with ThreadPoolExecutor(max_workers=len(run_seeds), thread_name_prefix="meta-utility") as pool:
            runs = list(pool.map(lambda seed: self._one_run(improver, seed, with_test, parent_id, purpose), run_seeds))
        count = len(runs)
        return MetaUtilityResult(
            val=sum(r.utility_val for r in runs) / count,
            test=sum(r.utility_test or 0.0 for r in runs) / count if with_test else None,
            runs=tuple(runs),
        )

    def _one_run(
        self, improver: str, seed: int, with_test: bool, parent_id: int | None, purpose: str
    ) -> MetaUtilityRun:
        with self._improver_slots:
            improved = improve_and_score(
                self._improvers,
                self._scorer,
                improver,
                initial_solution=self._scorer.task.seed_solution,
                purpose=purpose,
                parent_id=parent_id,
                seed=seed,
                splits=(VALIDATION, TEST) if with_test else (VALIDATION,),
            )
        return MetaUtilityRun(improved.run, improved.scores[VALIDATION], improved.scores.get(TEST))


@dataclass(frozen=True)
class Speculation:
    """Candidates scored ahead that their improver never asked about, and what they cost."""

    candidates: int = 0
    lm_calls: int = 0
    cost_usd: float = 0.0


class CandidateScores:
    """The meta-utility as one self-improvement run's improver sees it: validation only, one budget.

    A candidate's D runs take their seeds from the candidate itself (its hash, in this iteration,
    and how many times it was asked for before), so its score does not depend on when it is asked
    for. With `speculate`, every candidate the model proposes is scored at once, in the background,
    before the improver asks (`prefetch`; the n-th copy of a program as its n-th asking); a utility
    call then only waits for its result, and still counts against the budget. What the improver
    never asks about is counted apart by `finish`.
    """

    def __init__(
        self,
        meta_utility: MetaUtility,
        *,
        budget: int,
        seeds: SeedSequence,
        recorder: RunRecorder,
        stats: RunStats,
        speculate: bool,
    ) -> None:
        self._meta_utility = meta_utility
        self._seeds = seeds
        self._recorder = recorder
        self._stats = stats
        self._budget = budget
        self._asked = 0
        self._pending: dict[tuple[str, int], Future[MetaUtilityResult]] = {}
        self._times_asked: collections.Counter[str] = collections.Counter()
        self._times_proposed: collections.Counter[str] = collections.Counter()
        self._scored_ahead = 0
        self._speculating = (
            ThreadPoolExecutor(max_workers=max(1, self._budget), thread_name_prefix="speculate") if speculate else None
        )

    def service(self) -> UtilityService:
        return UtilityService(
            description=self._meta_utility.description,
            budget=self._budget,
            score=self._score,
            prefetch=self._prefetch if self._speculating is not None else None,
        )

    def _evaluate(
        self, improver: str, occurrence: int, parent_id: int, purpose: str = META_UTILITY
    ) -> MetaUtilityResult:
        """The meta-utility of the `occurrence`-th asking for this candidate: each is a fresh sample, as without speculation."""
        seeds = self._seeds.derived(f"{program_hash(improver)}/{occurrence}")
        return self._meta_utility.evaluate(improver, with_test=False, parent_id=parent_id, seeds=seeds, purpose=purpose)

    def _prefetch(self, improver: str, proposed_to: int) -> None:
        """The n-th proposal of a program is scored as its n-th asking will be (an improver asks once per copy)."""
        occurrence = self._times_proposed[improver]
        self._times_proposed[improver] += 1
        if self._speculating is None or self._scored_ahead >= self._budget:
            return
        self._scored_ahead += 1
        self._pending[(improver, occurrence)] = self._speculating.submit(
            self._evaluate, improver, occurrence, proposed_to, SPECULATIVE_META_UTILITY
        )

    def _score(self, improver: str, improver_run_id: int) -> float:
        self._asked += 1
        self._stats.stage = f"improving the improver · scoring candidate {self._asked}/{self._budget}"
        occurrence = self._times_asked[improver]
        self._times_asked[improver] += 1
        future = self._pending.pop((improver, occurrence), None)
        if future is not None:
            result = future.result()
            # Recorded as speculative when they started: from now on they are runs the improver asked for.
            self._recorder.event(
                improver_run_id,
                SPECULATION_ASKED,
                {"improver_run_ids": [run.improver_run.improver_run_id for run in result.runs]},
            )
            return result.val
        return self._evaluate(improver, occurrence, improver_run_id).val

    def finish(self, improver_run_id: int) -> Speculation:
        """Ends speculation for this run: what never started is dropped, what did is waited for and counted apart."""
        if self._speculating is None:
            return Speculation()
        pending, self._pending = list(self._pending.values()), {}
        unasked = [future.result() for future in pending if not future.cancel()]
        self._speculating.shutdown(wait=True)
        runs = [run.improver_run for result in unasked for run in result.runs]
        speculation = Speculation(len(unasked), sum(run.lm_calls for run in runs), sum(run.cost_usd for run in runs))
        if unasked:
            self._stats.add(speculative_calls=speculation.lm_calls, speculative_cost_usd=speculation.cost_usd)
            self._recorder.event(
                improver_run_id,
                "speculation",
                {
                    "unasked_candidates": speculation.candidates,
                    "lm_calls": speculation.lm_calls,
                    "cost_usd": speculation.cost_usd,
                    "improver_run_ids": [run.improver_run_id for run in runs],
                },
            )
        return speculation
