"""Everything one run needs, built once and handed to the loop's parts (they build no dependencies themselves)."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from selftaught.config import Profile
from selftaught.errors import ModelOutage, SandboxError, StoreError
from selftaught.llm.base import Backend
from selftaught.llm.cache import CacheMode
from selftaught.llm.circuit_breaker import CircuitBreaker
from selftaught.llm.pricing import CostMeter, PriceTable
from selftaught.llm.registry import open_backend
from selftaught.loop.limits import LimitedEvaluator, improver_run_guard
from selftaught.loop.replay import ReplayingBackend, ReplayingEvaluator, RunRecord
from selftaught.sandbox.doctor import SandboxReport, probe
from selftaught.sandbox.executor import JobRunner
from selftaught.sandbox.launcher import Launcher
from selftaught.sandbox.policy import SandboxPolicy
from selftaught.stop_signals import stop_signal
from selftaught.store.run_store import RunStore
from selftaught.tasks.base import Task
from selftaught.tasks.evaluation import Evaluator, ScorerErrorTally, SolutionEvaluator

logger = logging.getLogger("selftaught")


class SeedSequence:
    """Seeds for language-model requests and sandboxed runs, reproducible from the run's seed."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._step: int | None = None
        self._generator = random.Random(seed)

    def __call__(self) -> int:
        return self._generator.randrange(2**31)

    def restart(self, step: int) -> None:
        """Seeds of step `step` depend only on the run's seed and the step, so a resumed run can start at any step."""
        self._step = step
        self._generator = random.Random(f"{self._seed}/{step}")

    def derived(self, key: str) -> SeedSequence:
        """Seeds of one thing of this step (a candidate, by its hash): the same whenever, and in whatever order, it is asked for."""
        derived = SeedSequence(self._seed)
        derived._generator = random.Random(f"{self._seed}/{self._step}/{key}")
        return derived


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


@dataclass(frozen=True)
class RunContext:
    run_id: str
    store: RunStore
    #: Runs generated code (the sandbox on this machine).
    runner: JobRunner
    evaluator: Evaluator
    backend: Backend
    task: Task
    profile: Profile
    #: Draws the seeds of top-level steps; only the thread driving the run draws from it.
    seeds: SeedSequence
    stats: RunStats
    #: The run's seed, from which evaluation seeds derive.
    seed: int
    #: Evaluations that may run at once (CPU-bound: one per core by default, `--workers`).
    workers: int
    #: Improver runs that may run at once (they mostly wait for the model): its concurrency, within the memory guard.
    improver_runs: int
    #: Held by each improver run of a meta-utility, however many meta-utilities are being computed at once.
    improver_slots: threading.BoundedSemaphore
    #: Evaluates candidates as soon as a language model proposes them, before the improver asks.
    prefetch: ThreadPoolExecutor
    prices: PriceTable
    #: The run's spending so far, and its limit.
    meter: CostMeter
    #: Trips when the model cannot answer at all; the loop then stops the run (`ModelOutage`).
    breaker: CircuitBreaker


@dataclass(frozen=True)
class Continuation:
    """A recorded run to go on with (`resume`: same run, its record replayed) or to re-run from its responses."""

    record: RunRecord
    resume: bool
    #: The run's status and process as last seen; taking it over fails if another process changed them.
    seen_status: str = ""
    seen_pid: int | None = None
    #: What the run had spent when its last complete iteration was recorded. What it spent after that
    #: is counted as the record replays it, so the resumed run reaches its cost limit where the first did.
    spent_usd: float = 0.0


def check_sandbox(launcher: Launcher) -> SandboxReport:
    """Refuses a strict run when a required layer is missing; otherwise warns about what is missing."""
    report = probe(launcher)
    missing = report.missing_required
    if report.problem is not None and not launcher.policy.strict:
        logger.warning("the sandbox probe failed: %s", report.problem)
    if missing and launcher.policy.strict:
        details = "; ".join(report.missing[name] for name in missing)
        raise SandboxError(f"strict sandbox refused: {details} (see `selftaught doctor`)")
    if missing:
        logger.warning("sandbox weaker than strict here: %s missing (see `selftaught doctor`)", ", ".join(missing))
    return report


@contextmanager
def open_run(
    *,
    command: str,
    task: Task,
    model: str,
    profile: Profile,
    seed: int,
    store_path: Path,
    sandbox: SandboxPolicy,
    cache_mode: CacheMode = CacheMode.OFF,
    cache_path: Path | None = None,
    workers: int = 1,
    max_cost_usd: float | None = None,
    config: Path | None = None,
    stats: RunStats | None = None,
    options_record: dict[str, object] | None = None,
    initial_improver: str | None = None,
    continuation: Continuation | None = None,
) -> Iterator[RunContext]:
    """Creates the sandbox, backend and store record of a run; marks the run failed if the body raises.

    A KeyboardInterrupt (Ctrl-C, or SIGTERM and SIGHUP once `stop_on_signals` was called) marks it
    interrupted instead, naming the signal, and so does a `ModelOutage`, naming it; either way the sandbox is closed before the error goes on.

    The sandbox starts first, so its fork server never holds anything the backend loads. A
    resumed run keeps its id and takes over its record; a replay is a new run whose backend is
    the recorded one's responses and nothing else.
    """
    prices = PriceTable.load(config)
    prices.check_limit(model, max_cost_usd)  # before the sandbox, the backend or the store: nothing to undo
    improver_guard = improver_run_guard()
    launcher = Launcher(sandbox)
    # Counts what the run spends, live or replayed from its record (what it paid before it was resumed).
    meter = CostMeter(max_cost_usd)
    # The breaker's own requests are paid for like any other, and count toward the limit.
    breaker = CircuitBreaker(lambda probe: meter.add(prices.cost(model, probe.prompt_tokens, probe.completion_tokens)))
    try:
        launcher.start()
        check_sandbox(launcher)
        cache_file = cache_path or store_path.parent / "cache.sqlite"
        backend: Backend
        if continuation is None:
            backend = open_backend(model, cache_mode, cache_file, meter, breaker)
        else:
            live = open_backend(model, cache_mode, cache_file, meter, breaker) if continuation.resume else None
            backend = ReplayingBackend(continuation.record, live, model)
    except BaseException:
        launcher.close()
        raise
    # Every evaluation of generated code runs in this many children at most, whoever asks for it.
    evaluator: Evaluator = LimitedEvaluator(SolutionEvaluator(launcher), workers)
    store: RunStore | None = None
    try:
        store = RunStore(store_path)
        if continuation is not None and continuation.resume:
            run_id = continuation.record.run_id
            if not store.claim_run(run_id, continuation.seen_status, continuation.seen_pid):
                raise StoreError(f"run {run_id} was taken over by another process; not resuming it twice")
            evaluator = ReplayingEvaluator(continuation.record, evaluator)
            meter.add(continuation.spent_usd)
        else:
            if initial_improver is not None:
                # Before the run exists: a run killed at any instant after it is recorded can be resumed from it.
                store.save_program(initial_improver, "improver")
            run_id = store.create_run(
                command=command,
                task=task.name,
                model=model,
                seed=seed,
                config=asdict(profile),
                options=options_record or {},
            )
    except BaseException:
        launcher.close()
        backend.close()
        if store is not None:
            store.close()
        raise
    seeds = SeedSequence(seed)
    context = RunContext(
        run_id=run_id,
        store=store,
        runner=launcher,
        evaluator=evaluator,
        backend=backend,
        task=task,
        profile=profile,
        seeds=seeds,
        stats=stats or RunStats(),
        seed=seed,
        workers=workers,
        improver_runs=max(1, min(backend.concurrency, improver_guard)),
        improver_slots=threading.BoundedSemaphore(max(1, min(backend.concurrency, improver_guard))),
        prefetch=ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prefetch"),
        prices=prices,
        meter=meter,
        breaker=breaker,
    )
    context.stats.cost_usd = meter.spent_usd
    context.stats.run_id = run_id
    try:
        yield context
    except KeyboardInterrupt as interruption:  # Ctrl-C, or SIGTERM/SIGHUP under `stop_on_signals`
        store.finish_run(run_id, "interrupted", {"signal": stop_signal(interruption).name})
        raise
    except ModelOutage as outage:  # nothing the run did is lost: `--resume` continues it once the model answers
        store.finish_run(run_id, "interrupted" if command == "run" else "failed", {"reason": str(outage)})
        raise
    except BaseException as error:
        store.finish_run(run_id, "failed", {"error": f"{type(error).__name__}: {error}"})
        raise
    finally:
        context.prefetch.shutdown(wait=True, cancel_futures=True)
        launcher.close()
        backend.close()
        store.close()
