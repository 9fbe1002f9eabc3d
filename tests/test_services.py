"""The loop's parts take their services as arguments: another job runner plugs in without touching the loop.

A job runner that answers in-process stands where the sandbox (or a cluster) would; the parts
above it record, budget and score exactly as in a run, and what they hand the runner is data only.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from conftest import TEST_PROFILE
from selftaught.llm.canned import CannedBackend
from selftaught.llm.circuit_breaker import CircuitBreaker
from selftaught.llm.pricing import CostMeter, PriceTable
from selftaught.loop.improver_run import ImproverRunner, ModelAccess
from selftaught.loop.meta_utility import MetaUtility
from selftaught.loop.recording import RunRecorder
from selftaught.loop.scoring import SolutionScorer
from selftaught.loop.seeds import SeedSequence
from selftaught.loop.stats import RunStats
from selftaught.sandbox.child.helpers import extract_code
from selftaught.sandbox.executor import CallHandler
from selftaught.sandbox.outcome import ChildOutcome, SandboxLimits
from selftaught.store.reading import StoreReader
from selftaught.store.run_store import RunStore
from selftaught.tasks.base import TEST, VALIDATION
from selftaught.tasks.evaluation import SolutionEvaluator
from selftaught.tasks.parity_noiseless import ParityNoiseless

IMPROVED = "def algorithm(*args):\n    return 1"


class InProcessJobs:
    """Plays a job runner: an improver job asks the model once and returns what came back; an algorithm job fails."""

    def __init__(self) -> None:
        self.jobs: list[Mapping[str, Any]] = []
        self._lock = threading.Lock()

    def run(self, job: Mapping[str, Any], limits: SandboxLimits, serve: CallHandler | None = None) -> ChildOutcome:
        pickle.dumps(job)  # only data crosses to whatever runs the job: no lock, no function, no connection
        with self._lock:
            self.jobs.append(job)
        if job["job"] == "improver":
            assert serve is not None
            answer = serve("language_model.prompt", {"expertise": "e", "message": "m", "n_responses": 1})
            assert answer["responses"] == [f"```python\n{IMPROVED}\n```"]
            (proposed,) = extract_code(answer["responses"])
            score = serve("utility", {"solution": proposed})
            assert isinstance(score["score"], float)
            return ChildOutcome(result=proposed, has_result=True)
        return ChildOutcome(failure="no algorithm runs here")


def test_the_meta_utility_runs_on_any_job_runner(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")
    run_id = store.create_run(command="run", task="parity_noiseless", model="canned", seed=0, config={}, options={})
    recorder, stats, jobs = RunRecorder(store, run_id), RunStats(), InProcessJobs()
    model = ModelAccess(
        CannedBackend("canned", f"```python\n{IMPROVED}\n```"), PriceTable.load(None), CostMeter(None), CircuitBreaker()
    )
    task = ParityNoiseless()
    with ThreadPoolExecutor(max_workers=1) as prefetch:
        scorer = SolutionScorer(task, SolutionEvaluator(jobs), 0, recorder, stats, prefetch, utility_budget=2)
        improvers = ImproverRunner(jobs, model, recorder, stats, TEST_PROFILE.improver)
        meta_utility = MetaUtility(improvers, scorer, TEST_PROFILE, SeedSequence(0), threading.BoundedSemaphore(2))
        result = meta_utility.evaluate(task.seed_solution, with_test=True)
    store.close()

    assert len(result.runs) == TEST_PROFILE.meta_utility_runs
    assert all(run.improver_run.solution == IMPROVED and run.improver_run.lm_calls == 1 for run in result.runs)
    kinds = [job["job"] for job in jobs.jobs]
    # Each improver run: its job, the utility call it made, and its solution on validation and test.
    assert kinds.count("improver") == TEST_PROFILE.meta_utility_runs
    assert kinds.count("algorithm") == 3 * TEST_PROFILE.meta_utility_runs
    with StoreReader(tmp_path / "runs.sqlite") as reader:
        assert len(reader.lm_calls(run_id)) == TEST_PROFILE.meta_utility_runs
        splits = sorted(row["split"] for row in reader.evaluations(run_id))
    assert splits == sorted([VALIDATION, VALIDATION, TEST] * TEST_PROFILE.meta_utility_runs)
    assert stats.evaluations == len(splits)
