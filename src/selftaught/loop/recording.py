"""A run's record as the loop writes it: the store's recorder bound to one run, so no part passes the run id around."""

from __future__ import annotations

from typing import Any

from selftaught.store.contracts import Recorder
from selftaught.store.rows import CallRow
from selftaught.tasks.evaluation import Evaluation


class RunRecorder:
    """Writes one run's rows; every write commits at once (the store's promise), from any thread."""

    def __init__(self, store: Recorder, run_id: str) -> None:
        self._store = store
        self.run_id = run_id

    def save_program(self, source: str, kind: str) -> str:
        return self._store.save_program(source, kind)

    def start_improver_run(self, *, purpose: str, improver: str, initial_solution: str, parent_id: int | None) -> int:
        return self._store.start_improver_run(
            self.run_id, purpose=purpose, improver=improver, initial_solution=initial_solution, parent_id=parent_id
        )

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
    ) -> None:
        self._store.finish_improver_run(
            improver_run_id,
            solution=solution,
            solution_kind=solution_kind,
            error=error,
            lm_calls=lm_calls,
            lm_responses=lm_responses,
            utility_calls=utility_calls,
            seconds=seconds,
        )

    def evaluation(self, improver_run_id: int | None, solution: str, evaluation: Evaluation) -> None:
        self._store.record_evaluation(self.run_id, improver_run_id, solution, evaluation.as_row())

    def language_model_call(self, improver_run_id: int | None, call: CallRow) -> None:
        self._store.record_lm_call(self.run_id, improver_run_id, call)

    def event(self, improver_run_id: int | None, kind: str, detail: dict[str, Any]) -> None:
        self._store.record_event(self.run_id, improver_run_id, kind, detail)

    def iteration(self, row: dict[str, Any]) -> None:
        self._store.record_iteration(self.run_id, row)

    def finish(self, status: str, result: dict[str, Any]) -> None:
        self._store.finish_run(self.run_id, status, result)
