"""Everything one run needs, built once and handed to the loop's parts (they build no dependencies themselves)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from selftaught.config import Profile
from selftaught.llm.base import Backend
from selftaught.llm.registry import create_backend
from selftaught.sandbox.launcher import Launcher
from selftaught.store.run_store import RunStore
from selftaught.tasks.base import Task
from selftaught.tasks.evaluation import SolutionEvaluator


class SeedSequence:
    """Seeds for language-model requests and sandboxed runs, reproducible from the run's seed."""

    def __init__(self, seed: int) -> None:
        self._generator = random.Random(seed)

    def __call__(self) -> int:
        return self._generator.randrange(2**31)


@dataclass
class RunStats:
    """Live counters that the progress display reads while the run works."""

    started: float = field(default_factory=time.monotonic)
    stage: str = "starting"
    iteration: int = 0
    iterations: int = 0
    lm_calls: int = 0
    lm_responses: int = 0
    utility_calls: int = 0
    evaluations: int = 0
    meta_utility_val: float | None = None
    meta_utility_test: float | None = None

    @property
    def elapsed_seconds(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class RunContext:
    run_id: str
    store: RunStore
    launcher: Launcher
    evaluator: SolutionEvaluator
    backend: Backend
    task: Task
    profile: Profile
    seeds: SeedSequence
    stats: RunStats


@contextmanager
def open_run(
    *,
    command: str,
    task: Task,
    model: str,
    profile: Profile,
    seed: int,
    store_path: Path,
    stats: RunStats | None = None,
) -> Iterator[RunContext]:
    """Creates the backend, sandbox and store record of a run; marks the run failed if the body raises."""
    backend = create_backend(model)
    store = RunStore(store_path)
    launcher = Launcher()
    seeds = SeedSequence(seed)
    run_id = store.create_run(command=command, task=task.name, model=model, seed=seed, config=asdict(profile))
    context = RunContext(
        run_id=run_id,
        store=store,
        launcher=launcher,
        evaluator=SolutionEvaluator(launcher, seeds),
        backend=backend,
        task=task,
        profile=profile,
        seeds=seeds,
        stats=stats or RunStats(),
    )
    try:
        yield context
    except KeyboardInterrupt:
        store.finish_run(run_id, "interrupted", None)
        raise
    except BaseException as error:
        store.finish_run(run_id, "failed", {"error": f"{type(error).__name__}: {error}"})
        raise
    finally:
        launcher.close()
        backend.close()
        store.close()
