"""What one run is made of, built once from its options: the loop's parts receive the services they use.

`open_run` is the one place that chooses implementations: the job runners (the sandbox on this
machine; for evaluations, the nodes of a Ray cluster with `--executor ray`), the model behind its
breaker and cost limit, the recorder, the evaluator. Everything below takes them as arguments, so
another job runner or another reader of the store plugs in here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from selftaught.config import Profile
from selftaught.errors import ModelOutage, StoreError
from selftaught.llm.base import Backend
from selftaught.llm.circuit_breaker import CircuitBreaker
from selftaught.llm.pricing import CostMeter, PriceTable
from selftaught.llm.registry import open_backend
from selftaught.loop.improver_run import ImproverRunner, ModelAccess
from selftaught.loop.limits import LimitedEvaluator, improver_run_guard
from selftaught.loop.meta_utility import MetaUtility
from selftaught.loop.recording import RunRecorder
from selftaught.loop.replay import ReplayingBackend, ReplayingEvaluator, RunRecord
from selftaught.loop.scoring import SolutionScorer
from selftaught.loop.seeds import SeedSequence
from selftaught.loop.stats import RunStats
from selftaught.options import RunOptions, options_record
from selftaught.sandbox.doctor import SandboxReport, enforce_policy, probe
from selftaught.sandbox.launcher import Launcher
from selftaught.stop_signals import stop_signal
from selftaught.store.contracts import Recorder
from selftaught.store.run_store import RunStore
from selftaught.tasks.base import Task
from selftaught.tasks.evaluation import Evaluator, SolutionEvaluator

if TYPE_CHECKING:
    from selftaught.sandbox.ray_executor import RayJobRunner

logger = logging.getLogger("selftaught")


@dataclass(frozen=True)
class RunServices:
    """The services of one recorded run. Only the top of each command (`self_improve`, transfer, the
    experiments, `selftaught.api`) holds all of them; the parts below get the ones they use."""

    run_id: str
    task: Task
    profile: Profile
    #: Draws the seeds of top-level steps; only the thread driving the run draws from it.
    seeds: SeedSequence
    stats: RunStats
    recorder: RunRecorder
    scorer: SolutionScorer
    improvers: ImproverRunner
    meta_utility: MetaUtility
    #: The run's spending so far, and its limit.
    meter: CostMeter
    #: The model as the run reaches it (replayed, cached, limited): what its throttling is read from.
    backend: Backend
    #: Improver runs that may run at once (they mostly wait for the model): its concurrency, within the memory guard.
    improver_runs: int
    #: Where the run is recorded: what reading it back opens, read-only.
    store_path: Path


@dataclass(frozen=True)
class Continuation:
    """A recorded run to go on with (`resume`: same run, its record replayed) or to re-run from its responses."""

    record: RunRecord
    resume: bool
    #: The run's status and process as last seen; taking it over fails if another process changed them.
    seen_status: str = ""
    seen_pid: int | None = None
    #: What every attempt of the run paid for, and its live calls of a model without a price. Answers
    #: replayed from the record then cost nothing again: the limit counts each call once, whatever the
    #: resumed run asks, and a run whose improvers ask what they asked before stops where the first would have.
    spent_usd: float = 0.0
    unpriced_calls: int = 0


def check_sandbox(launcher: Launcher) -> SandboxReport:
    """Refuses a strict run when a required layer is missing; otherwise warns about what is missing."""
    report = probe(launcher)
    missing = {name: report.missing[name] for name in report.missing_required}
    enforce_policy(missing, report.problem, launcher.policy.strict)
    return report


def open_cluster(options: RunOptions, resources: ExitStack) -> RayJobRunner | None:
    """The Ray cluster that runs the evaluations (`--executor ray`), its sandbox checked on every node; else None.

    Improver runs stay on this machine: they mostly wait for the model, and the host answers their calls.
    """
    if options.executor != "ray":
        return None
    from selftaught.sandbox.ray_executor import RayJobRunner  # the one import of Ray, when it is chosen

    cluster = RayJobRunner(options.ray_address, options.sandbox)
    resources.callback(cluster.close)
    for node in cluster.probe_nodes():
        where, doctor = f" on node {node.name}", "selftaught doctor --executor ray"
        enforce_policy(node.missing_required, node.problem, options.sandbox.strict, where, doctor)
    if options.workers < cluster.cpus:  # --workers counts this machine's cores unless given
        message = "the Ray cluster has %d CPUs, but at most %d evaluations run at once (--workers)"
        logger.warning(message, cluster.cpus, options.workers)
    return cluster


@contextmanager
def open_run(
    command: str,
    options: RunOptions,
    task: Task,
    improver: str,
    stats: RunStats | None = None,
    continuation: Continuation | None = None,
) -> Iterator[RunServices]:
    """Creates the sandbox, backend and store record of a run; marks the run failed if the body raises.

    A KeyboardInterrupt (Ctrl-C, or SIGTERM and SIGHUP once `stop_on_signals` was called) marks it
    interrupted instead, naming the signal, and so does a `ModelOutage`, naming it; either way the
    sandbox is closed before the error goes on.

    The sandbox starts first, so its fork server never holds anything the backend loads. A
    resumed run keeps its id and takes over its record; a replay is a new run whose backend is
    the recorded one's responses and nothing else.
    """
    prices = PriceTable.load(options.config)
    prices.check_limit(options.model, options.max_cost_usd)  # before anything that would need undoing
    improver_guard = improver_run_guard()
    # Counts what the run spends, live or replayed from its record (what it paid before it was resumed).
    meter = CostMeter(options.max_cost_usd)
    # The breaker's own requests are paid for like any other, and count toward the limit.
    breaker = CircuitBreaker(
        lambda probe: meter.add(prices.cost(options.model, probe.prompt_tokens, probe.completion_tokens))
    )
    with ExitStack() as resources:
        launcher = Launcher(options.sandbox)
        resources.callback(launcher.close)
        launcher.start()
        check_sandbox(launcher)
        cluster = open_cluster(options, resources)
        backend = _open_model(options, meter, breaker, continuation)
        resources.callback(backend.close)
        store = RunStore(options.store)
        resources.callback(store.close)
        run_id = _claim_or_create_run(store, command, options, task, improver, continuation)
        evaluator: Evaluator = LimitedEvaluator(SolutionEvaluator(cluster or launcher), options.workers)
        if continuation is not None and continuation.resume:
            evaluator = ReplayingEvaluator(continuation.record, evaluator)
            meter.carry_over(continuation.spent_usd, continuation.unpriced_calls)
        prefetch = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="prefetch")
        resources.callback(prefetch.shutdown, wait=True, cancel_futures=True)
        recorder = RunRecorder(store, run_id)
        with _recording_how_it_ends(recorder, command):
            if cluster is not None:
                cluster.report_to(recorder)
            model = ModelAccess(backend, prices, meter, breaker)
            yield _services(
                options, task, stats or RunStats(), recorder, launcher, evaluator, model, prefetch, improver_guard
            )


def _open_model(
    options: RunOptions, meter: CostMeter, breaker: CircuitBreaker, continuation: Continuation | None
) -> Backend:
    if continuation is None:
        return open_backend(options.model, options.cache, _cache_file(options), meter, breaker)
    live = (
        open_backend(options.model, options.cache, _cache_file(options), meter, breaker)
        if continuation.resume
        else None
    )
    return ReplayingBackend(continuation.record, live, options.model)


def _cache_file(options: RunOptions) -> Path:
    return options.cache_file or options.store.parent / "cache.sqlite"


def _claim_or_create_run(
    store: Recorder,
    command: str,
    options: RunOptions,
    task: Task,
    improver: str,
    continuation: Continuation | None,
) -> str:
    if continuation is not None and continuation.resume:
        run_id = continuation.record.run_id
        if not store.claim_run(run_id, continuation.seen_status, continuation.seen_pid):
            raise StoreError(f"run {run_id} was taken over by another process; not resuming it twice")
        return run_id
    # Before the run exists: a run killed at any instant after it is recorded can be resumed from it.
    store.save_program(improver, "improver")
    return store.create_run(
        command=command,
        task=task.name,
        model=options.model,
        seed=options.seed,
        config=asdict(options.profile),
        options=options_record(options, improver),
    )


def _services(
    options: RunOptions,
    task: Task,
    stats: RunStats,
    recorder: RunRecorder,
    launcher: Launcher,
    evaluator: Evaluator,
    model: ModelAccess,
    prefetch: ThreadPoolExecutor,
    improver_guard: int,
) -> RunServices:
    profile = options.profile
    seeds = SeedSequence(options.seed)
    improver_runs = max(1, min(model.backend.concurrency, improver_guard))
    scorer = SolutionScorer(task, evaluator, options.seed, recorder, stats, prefetch, profile.improver.utility_calls)
    improvers = ImproverRunner(launcher, model, recorder, stats, profile.improver)
    meta_utility = MetaUtility(improvers, scorer, profile, seeds, threading.BoundedSemaphore(improver_runs))
    stats.cost_usd = model.meter.spent_usd
    stats.run_id = recorder.run_id
    return RunServices(
        run_id=recorder.run_id,
        task=task,
        profile=profile,
        seeds=seeds,
        stats=stats,
        recorder=recorder,
        scorer=scorer,
        improvers=improvers,
        meta_utility=meta_utility,
        meter=model.meter,
        backend=model.backend,
        improver_runs=improver_runs,
        store_path=options.store,
    )


@contextmanager
def _recording_how_it_ends(recorder: RunRecorder, command: str) -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt as interruption:  # Ctrl-C, or SIGTERM/SIGHUP under `stop_on_signals`
        recorder.finish("interrupted", {"signal": stop_signal(interruption).name})
        raise
    except ModelOutage as outage:  # nothing the run did is lost: `--resume` continues it once the model answers
        recorder.finish("interrupted" if command == "run" else "failed", {"reason": str(outage)})
        raise
    except BaseException as error:
        recorder.finish("failed", {"error": f"{type(error).__name__}: {error}"})
        raise
