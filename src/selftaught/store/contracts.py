"""The store's two contracts: the `Recorder` a run writes through and the `Reader` every reading command uses.

`RunStore` and `StoreReader` implement them on a SQLite file; `tests/test_store_contracts.py`
runs any implementation of either through the same checks.

What both promise:
- Every write is committed when its method returns: a crash loses nothing recorded, and a
  reader opened afterwards (in any process) sees it.
- A `Recorder` is safe to share between the threads of one process.
- A `Reader` never writes and never migrates: a store an older selftaught wrote is refused with
  a StoreError that says how to upgrade it (`selftaught.store.migrations.ensure_current_schema`).
- Rows come back as plain dicts with the columns of their table; JSON columns (a run's config,
  options and result, a call's request and responses, an evaluation's violations, an event's
  detail) are decoded, and an evaluation's scorer problems are (problem, outputs) tuples.
- A `Reader` trusts nothing of what it reads: a value of another type than its column's, text that
  is not UTF-8, a number that is not finite or JSON of another shape than selftaught records
  (`selftaught.store.row_checks`) is a StoreError naming the table, column and row, and no query
  runs forever (on a damaged or hostile file a StoreError stops it; a signal still interrupts it).
- A `Recorder` writes only strict JSON and finite numbers: an event's detail keeps NaN and the
  infinities as their text, anything else holding one is a StoreError.
- Errors are StoreError, whose message names the store and what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from selftaught.store.rows import CallRow, EvaluationRow


class Recorder(Protocol):
    """Writes one store: runs, their programs, improver runs and everything those produce."""

    @property
    def path(self) -> Path:
        """The store's file: what a `Reader` of what was recorded opens."""
        ...

    def create_run(
        self, *, command: str, task: str, model: str, seed: int, config: dict[str, Any], options: dict[str, Any]
    ) -> str:
        """Records a new run as running in this process; returns its id. `options` are what resuming it needs."""
        ...

    def claim_run(self, run_id: str, status: str, pid: int | None) -> bool:
        """Takes over a run found with `status` and `pid` for this process; False when another took it first."""
        ...

    def finish_run(self, run_id: str, status: str, result: dict[str, Any] | None) -> None: ...

    def save_program(self, source: str, kind: str) -> str:
        """Keeps a program's source (once, whatever the number of saves); returns its hash."""
        ...

    def start_improver_run(
        self, run_id: str, *, purpose: str, improver: str, initial_solution: str, parent_id: int | None
    ) -> int:
        """Records an improver run as started; returns its id."""
        ...

    def finish_improver_run(
        self,
        improver_run_id: int,
        *,
        solution: str | None,
        solution_kind: str,
        error: str | None,
        lm_calls: int,
        lm_responses: int,
        utility_calls: int,
        seconds: float,
    ) -> None: ...

    def record_evaluation(self, run_id: str, improver_run_id: int | None, solution: str, row: EvaluationRow) -> None:
        """Records a solution's score (and keeps the solution)."""
        ...

    def record_lm_call(self, run_id: str, improver_run_id: int | None, call: CallRow) -> None: ...

    def record_event(self, run_id: str, improver_run_id: int | None, kind: str, detail: dict[str, Any]) -> None:
        """Records something that happened; `detail` is kept as JSON (what JSON cannot hold, as its text)."""
        ...

    def record_iteration(self, run_id: str, row: dict[str, Any]) -> None:
        """Records one iteration of the self-improvement loop: the columns of `iterations` but `run_id`."""
        ...

    def close(self) -> None: ...


class Reader(Protocol):
    """Queries of one store, safe beside a run that is writing it."""

    def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first, with `iteration_rows`, `best_val` and `cost_usd` added."""
        ...

    def find_run(self, run_id: str) -> dict[str, Any] | None:
        """The run with this id or unique id prefix; None when none matches, StoreError when several do."""
        ...

    def run(self, run_id: str) -> dict[str, Any]:
        """As `find_run`, but a StoreError when no run matches."""
        ...

    def has_run(self, run_id: str) -> bool: ...

    def final_improver(self, run_id: str) -> str | None:
        """The source of the improver a run (by id or unique prefix) ended with; None when there is no such run."""
        ...

    def counts(self, run_id: str) -> dict[str, Any]:
        """A run's language-model calls (all, live, replayed), their responses and cost, and its evaluations."""
        ...

    def best_solution(self, run_id: str) -> dict[str, Any] | None:
        """The run's solution with the best validation score, with its test score if it has one."""
        ...

    def iterations(self, run_id: str) -> list[dict[str, Any]]: ...

    def program(self, program_hash: str) -> str:
        """The source of a program by its hash; StoreError when the store lacks it."""
        ...

    def programs(self, hashes: set[str]) -> dict[str, dict[str, Any]]:
        """The program rows with these hashes, by hash; those the store lacks are left out."""
        ...

    def improver_runs(self, run_id: str) -> list[dict[str, Any]]: ...

    def evaluations(self, run_id: str) -> list[dict[str, Any]]: ...

    def lm_calls(self, run_id: str) -> list[dict[str, Any]]: ...

    def events(self, run_id: str) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...
