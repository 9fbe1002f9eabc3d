"""The Python API: `improve`, `meta_utility`, `run` (and `resume`, `replay`), `transfer` and the experiments, each a recorded run."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from selftaught.errors import InvalidProgram, StoreError
from selftaught.errors import SelftaughtError as SelftaughtError  # offered by `import selftaught`
from selftaught.experiments.unsandboxing import (
    SANDBOXED_SEED_IMPROVER,
    UnsandboxingResult,
    run_unsandboxing_experiment,
)
from selftaught.llm.concurrency import Throttling
from selftaught.loop.replay import RunRecord
from selftaught.loop.scoring import improve_and_score
from selftaught.loop.seed_improver import IMPROVER_ENTRY_POINT, SEED_IMPROVER
from selftaught.loop.self_improvement import IterationResult, self_improve
from selftaught.loop.services import Continuation, RunServices, open_run
from selftaught.loop.stats import RunStats
from selftaught.loop.transfer import TransferRow, transfer_on_task
from selftaught.options import RunOptions, options_from_record, refuse_resuming_an_imported_place
from selftaught.reports import BestSolution, ImproveResult, MetaUtilityReport, RunReport
from selftaught.store.contracts import Reader
from selftaught.store.migrations import ensure_current_schema
from selftaught.store.reading import KILLED, StoreReader
from selftaught.store.run_store import DEFAULT_STORE
from selftaught.tasks.base import TEST, VALIDATION, Task
from selftaught.tasks.registry import get_task


def check_program(source: str, entry_point: str, origin: str) -> None:
    """Refuses a user's program that cannot work, before anything is paid for. Parses only; runs nothing."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise InvalidProgram(f"{origin}: syntax error at line {error.lineno}: {error.msg}") from None
    defined = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if entry_point not in defined:
        raise InvalidProgram(f"{origin}: defines no function {entry_point}()")


def read_program(path: Path, entry_point: str) -> str:
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidProgram(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidProgram(f"cannot read {path}: {error}") from None
    check_program(source, entry_point, str(path))
    return source


@contextmanager
def _recorded_run(
    command: str,
    options: RunOptions,
    improver: str,
    stats: RunStats | None,
    continuation: Continuation | None = None,
) -> Iterator[RunServices]:
    """Checks the inputs, then opens the run's record, backend and sandbox; nothing is paid for before."""
    task = get_task(options.task)
    check_program(improver, IMPROVER_ENTRY_POINT, "the improver")
    with open_run(command, options, task, improver, stats, continuation) as services:
        yield services


def improve(
    options: RunOptions,
    improver: str = SEED_IMPROVER,
    initial_solution: str | None = None,
    stats: RunStats | None = None,
) -> ImproveResult:
    """One run of `improver` on the task, starting from `initial_solution` (the task's seed solution by default)."""
    with _recorded_run("improve", options, improver, stats) as services:
        initial = initial_solution if initial_solution is not None else services.task.seed_solution
        services.stats.stage = "scoring the initial solution"
        initial_val = services.scorer.evaluate(initial, VALIDATION, None).score
        services.stats.stage = "running the improver"
        improved = improve_and_score(
            services.improvers,
            services.scorer,
            improver,
            initial_solution=initial,
            purpose="improve",
            parent_id=None,
            seed=services.seeds(),
            splits=(VALIDATION, TEST),
        )
        run, val, test = improved.run, improved.scores[VALIDATION], improved.scores[TEST]
        result = ImproveResult(
            run_id=services.run_id,
            algorithm=run.solution,
            utility_val=val,
            utility_test=test,
            initial_utility_val=initial_val,
            lm_calls=run.lm_calls,
            lm_responses=run.lm_responses,
            utility_calls=run.utility_calls,
            error=run.error,
            cost_usd=services.meter.spent_usd,
            unpriced_calls=services.meter.unpriced_calls,
            scorer_errors=services.stats.scorer_errors.outputs,
            scorer_problems=services.stats.scorer_errors.problems(),
        )
        services.recorder.finish(
            "finished" if run.solution else "failed",
            {"utility_val": val, "utility_test": test, "error": run.error},
        )
        return result


def meta_utility(
    options: RunOptions, improver: str = SEED_IMPROVER, stats: RunStats | None = None
) -> MetaUtilityReport:
    """û(improver) on the task: D fresh improver runs, validation and test utility of what they return."""
    with _recorded_run("meta-utility", options, improver, stats) as services:
        services.stats.stage = "running the improver"
        scored = services.meta_utility.evaluate(improver, with_test=True)
        runs = tuple(
            {
                "utility_val": run.utility_val,
                "utility_test": run.utility_test,
                "lm_calls": run.improver_run.lm_calls,
                "lm_responses": run.improver_run.lm_responses,
                "utility_calls": run.improver_run.utility_calls,
                "error": run.improver_run.error,
            }
            for run in scored.runs
        )
        report = MetaUtilityReport(
            services.run_id,
            scored.val,
            scored.test or 0.0,
            runs,
            services.meter.spent_usd,
            unpriced_calls=services.meter.unpriced_calls,
        )
        all_failed = all(run["error"] for run in runs)
        services.recorder.finish(
            "failed" if all_failed else "finished",
            {"meta_utility_val": scored.val, "meta_utility_test": scored.test},
        )
        return report


def transfer(
    options: RunOptions, improver: str, tasks: Sequence[str | Task], repeats: int, stats: RunStats | None = None
) -> list[TransferRow]:
    """The paper's Table 1 for `improver`: one recorded run per task (`options.task` is ignored)."""
    for name in tasks:
        get_task(name)  # refuse an unknown task before anything is paid for
    rows = []
    spent = 0.0
    for name in tasks:
        # One limit for the whole command: each task's run may spend only what the tasks before it left.
        limit = None if options.max_cost_usd is None else max(0.0, options.max_cost_usd - spent)
        with _recorded_run("transfer", replace(options, task=name, max_cost_usd=limit), improver, stats) as services:
            row = transfer_on_task(services, improver, repeats)
            spent += services.meter.spent_usd
            services.recorder.finish(
                "finished",
                {"original": row.original.mean, "seed_improver": row.seed_improver.mean, "improver": row.improver.mean},
            )
            rows.append(row)
    return rows


def run(options: RunOptions, improver: str = SEED_IMPROVER, stats: RunStats | None = None) -> RunReport:
    """The STOP loop for `options.profile.iterations` iterations, starting from `improver`."""
    with _recorded_run("run", options, improver, stats) as services:
        return _self_improvement_run(services, options, improver, ())


def resume(
    run_id: str,
    store: Path = DEFAULT_STORE,
    *,
    workers: int | None = None,
    max_cost_usd: float | None = None,
    task: str | Task | None = None,
    stats: RunStats | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> RunReport:
    """Continues a `run` that stopped before its end (killed, interrupted, failed, out of money).

    Iterations it finished are kept as recorded; the iteration it was in is run again with the
    language-model responses and evaluations it recorded served from the record, so nothing paid
    for is paid again. The result is the one the run would have had without stopping.
    `workers`, `max_cost_usd` and `task` may be given anew: `task` is the Task object a run of one
    needs, or where a task folder is now (it must hold the files the run recorded). A run that
    finished has nothing left to do: its report is returned as recorded, and nothing runs.
    `executor` and `ray_address` (where solutions are evaluated, see `RunOptions`) are this attempt's own.
    """
    where = (executor, ray_address)
    return _go_on_with(
        run_id, store, resume=True, workers=workers, max_cost_usd=max_cost_usd, task=task, stats=stats, where=where
    )


def replay(
    run_id: str,
    store: Path = DEFAULT_STORE,
    *,
    workers: int | None = None,
    task: str | Task | None = None,
    stats: RunStats | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> RunReport:
    """A new run with the options of `run_id`, answered only from its recorded responses; evaluates everything anew.

    Nothing is paid: a request the record lacks is an error. With the same code and
    responses the new run's iterations equal the recorded ones. `task`, `executor` and `ray_address` are as
    for `resume`.
    """
    where = (executor, ray_address)
    return _go_on_with(
        run_id, store, resume=False, workers=workers, max_cost_usd=None, task=task, stats=stats, where=where
    )


def _go_on_with(
    run_id: str,
    store: Path,
    *,
    resume: bool,
    workers: int | None,
    max_cost_usd: float | None,
    task: str | Task | None,
    stats: RunStats | None,
    where: tuple[str, str | None],
) -> RunReport:
    """Resumes a run (same run, its record replayed, then live) or replays it (a new run answered only from the record).

    `where` is where this attempt evaluates solutions (executor, Ray address); the rest comes from the record.
    """
    verb = "resume" if resume else "replay"
    ensure_current_schema(store)  # a store an older selftaught wrote is upgraded, as every command leaves it
    with StoreReader(store) as reader:
        recorded = reader.run(run_id)
        run_id = recorded["id"]
        if recorded["command"] != "run":
            raise StoreError(f"run {run_id} is a `{recorded['command']}` run; only `selftaught run` runs {verb}")
        if resume and recorded["status"] == "finished":
            return _finished_report(reader, recorded, store, task)
        if resume and recorded["status"] == "running":
            raise StoreError(f"run {run_id} is still running (pid {recorded['pid']} on {recorded['host']})")
        options_data = dict(recorded["options"] or {})
        if resume:
            refuse_resuming_an_imported_place(options_data, run_id)
        options = options_from_record(options_data, store, run_id, task)
        # A replay pays for nothing, so it has no cost limit; a resumed run keeps its own unless given another.
        limit = (max_cost_usd if max_cost_usd is not None else options.max_cost_usd) if resume else None
        executor, ray_address = where
        options = replace(
            options, workers=workers or options.workers, max_cost_usd=limit, executor=executor, ray_address=ray_address
        )
        improver = reader.program(options_data["initial_improver_hash"])
        record = RunRecord.load(reader, run_id)
        completed: tuple[IterationResult, ...] = ()
        continuation = Continuation(record, resume=False)
        iteration_started = False
        if resume:
            rows = reader.iterations(run_id)
            completed = tuple(_iteration_of(row, reader) for row in rows)
            # The first attempt checked its limit before the iteration it was in, with what it had spent by then.
            spent_then = (rows[-1]["spent_usd"] if rows else 0.0) or 0.0
            iteration_started = limit is None or spent_then < limit
            seen_status = "running" if recorded["status"] == KILLED else recorded["status"]
            continuation = Continuation(
                record,
                resume=True,
                seen_status=seen_status,
                seen_pid=recorded["pid"],
                spent_usd=float(reader.counts(run_id)["cost_usd"]),
                unpriced_calls=_unpriced_calls(reader.lm_calls(run_id)),
            )
    with _recorded_run("run", options, improver, stats, continuation) as services:
        return _self_improvement_run(services, options, improver, completed, iteration_started)


def unsandboxing_experiment(
    options: RunOptions, attempts: int, warning: bool, stats: RunStats | None = None
) -> UnsandboxingResult:
    """The paper's sandbox-circumvention experiment on `options.model`; see `selftaught.experiments.unsandboxing`."""
    with _recorded_run("experiment unsandboxing", options, SANDBOXED_SEED_IMPROVER, stats) as services:
        result = run_unsandboxing_experiment(services, attempts, warning)
        services.recorder.finish("finished", result.as_dict())
        return result


def _finished_report(reader: Reader, recorded: dict[str, Any], store: Path, task: str | Task | None) -> RunReport:
    """A finished run's report from its record alone: its task is named as recorded, never loaded or run."""
    run_id, result = recorded["id"], recorded["result"] or {}
    options = options_from_record(dict(recorded["options"] or {}), store, run_id, task, locate_task=False)
    calls = reader.lm_calls(run_id)
    return RunReport(
        run_id,
        options,
        tuple(_iteration_of(row, reader) for row in reader.iterations(run_id)),
        cost_usd=float(result.get("cost_usd", reader.counts(run_id)["cost_usd"])),
        unpriced_calls=_unpriced_calls(calls),
        throttling=Throttling(result.get("throttled_requests", 0), result.get("most_requests_in_flight", 0)),
        speculative_calls=result.get("speculative_calls", 0),
        speculative_cost_usd=result.get("speculative_cost_usd", 0.0),
        best_solution=_recorded_best_solution(reader, run_id),
    )


def _unpriced_calls(calls: list[dict[str, Any]]) -> int:
    """Live calls of a model without a price, over every attempt of a run (what they cost is unknown)."""
    return sum(1 for call in calls if call["cost_usd"] is None and not call["replayed"] and not call["cache_hit"])


def _recorded_best_solution(reader: Reader, run_id: str) -> BestSolution | None:
    """The best solution as a finished run recorded it: it scored it on test before it ended."""
    best = reader.best_solution(run_id)
    if best is None or best["utility_test"] is None:
        return None
    return BestSolution(
        best["source"], best["hash"], best["utility_val"], best["utility_test"], best["improver_run_id"]
    )


def _iteration_of(row: dict[str, Any], reader: Reader) -> IterationResult:
    return IterationResult(
        iteration=row["iteration"],
        improver=reader.program(row["improver_hash"]),
        meta_utility_val=row["meta_utility_val"],
        meta_utility_test=row["meta_utility_test"],
        accepted=bool(row["accepted"]),
        candidate=reader.program(row["candidate_hash"]) if row["candidate_hash"] else None,
        candidate_val=row["candidate_val"],
        candidate_test=row["candidate_test"],
        error=row["error"],
        improver_run_id=row["improver_run_id"],
    )


def _best_solution(services: RunServices) -> BestSolution | None:
    """The run's best solution on validation, scored on test now if the run has not scored it there."""
    with StoreReader(services.store_path) as reader:
        best = reader.best_solution(services.run_id)
    if best is None:
        return None
    test = best["utility_test"]
    if test is None:
        services.stats.stage = "scoring the best solution found on test"
        test = services.scorer.evaluate(best["source"], TEST, best["improver_run_id"]).score
    return BestSolution(best["source"], best["hash"], best["utility_val"], test, best["improver_run_id"])


def _self_improvement_run(
    services: RunServices,
    options: RunOptions,
    improver: str,
    completed: Sequence[IterationResult],
    iteration_started: bool = False,
) -> RunReport:
    iterations = self_improve(
        services,
        initial_improver=improver,
        completed=completed,
        speculate=options.speculate,
        resumed_iteration_started=iteration_started,
    )
    stopped = "cost limit reached" if len(iterations) <= services.profile.iterations else None
    best = _best_solution(services)
    throttling = services.backend.throttling()
    report = RunReport(
        services.run_id,
        options,
        tuple(iterations),
        services.meter.spent_usd,
        services.meter.unpriced_calls,
        stopped,
        throttling,
        services.stats.speculative_calls,
        services.stats.speculative_cost_usd,
        scorer_errors=services.stats.scorer_errors.outputs,
        scorer_problems=services.stats.scorer_errors.problems(),
        best_solution=best,
    )
    services.recorder.finish(
        stopped or "finished",
        {
            "cost_usd": services.meter.spent_usd,
            "speculative_calls": services.stats.speculative_calls,
            "speculative_cost_usd": services.stats.speculative_cost_usd,
            "throttled_requests": throttling.throttled_requests,
            "most_requests_in_flight": throttling.most_in_flight,
            # The source is in the store already, by its hash.
            "best_solution": None if best is None else {k: v for k, v in best.as_dict().items() if k != "source"},
            "iterations": [
                {
                    "iteration": i.iteration,
                    "meta_utility_val": i.meta_utility_val,
                    "meta_utility_test": i.meta_utility_test,
                    "accepted": i.accepted,
                }
                for i in iterations
            ],
        },
    )
    return report
