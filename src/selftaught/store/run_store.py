"""The SQLite record of runs, written only by the host; every write commits at once so a crash loses nothing paid for."""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from selftaught.errors import StoreError
from selftaught.store.connection import connect_for_writing, describe_sqlite_error
from selftaught.store.migrations import apply_migrations
from selftaught.store.processes import process_identity
from selftaught.store.rows import CallRow, EvaluationRow, finite_numbers, now, program_hash

DEFAULT_STORE = Path("selftaught-runs") / "runs.sqlite"


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class RunStore:
    """The `Recorder` of one SQLite store file (it migrates the file on opening); safe to share between threads."""

    def __init__(self, path: Path, busy_timeout_seconds: float = 30.0) -> None:
        self.path = path
        try:
            self._connection = connect_for_writing(path, busy_timeout_seconds)
        except (sqlite3.Error, OSError) as error:
            raise StoreError(f"cannot open the run store {path}: {describe_sqlite_error(error)}") from None
        try:
            apply_migrations(self._connection)
        except sqlite3.Error as error:
            self._connection.close()
            raise StoreError(f"cannot open the run store {path}: {describe_sqlite_error(error)}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._connection.close()

    def _execute(self, sql: str, parameters: tuple[Any, ...]) -> sqlite3.Cursor:
        for value in parameters:
            # SQLite would keep an infinity, which no reader takes, and turn NaN into NULL.
            if isinstance(value, float) and not math.isfinite(value):
                raise StoreError(f"cannot write to the run store {self.path}: {value} is no number a record keeps")
        with self._lock:
            try:
                return self._connection.execute(sql, parameters)
            except sqlite3.Error as error:
                raise StoreError(f"cannot write to the run store {self.path}: {describe_sqlite_error(error)}") from None

    def _json(self, value: Any, what: str) -> str:
        """`value` as strict JSON, which every reader of a store takes: NaN or an infinity in it is a StoreError."""
        try:
            return json.dumps(value, allow_nan=False)
        except ValueError as error:
            raise StoreError(f"cannot record {what} in the run store {self.path}: {error}") from None

    def _write(self, sql: str, parameters: tuple[Any, ...]) -> int:
        """Runs one statement, committed at once; returns the id of the row it inserted."""
        return int(self._execute(sql, parameters).lastrowid or 0)

    # --- runs -----------------------------------------------------------------------------

    def create_run(
        self,
        *,
        command: str,
        task: str,
        model: str,
        seed: int,
        config: dict[str, Any],
        options: dict[str, Any],
    ) -> str:
        """Records a new run as running in this process; `options` are what resuming it needs."""
        run_id = new_run_id()
        self._write(
            "INSERT INTO runs (id, command, task, model, seed, config, options, status, started_at, host, pid, process)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                command,
                task,
                model,
                seed,
                self._json(config, "the run's config"),
                self._json(options, "the run's options"),
                "running",
                now(),
                socket.gethostname(),
                os.getpid(),
                process_identity(os.getpid()),
            ),
        )
        return run_id

    def claim_run(self, run_id: str, status: str, pid: int | None) -> bool:
        """Takes over a run found with `status` and `pid` for this process; False when another took it first."""
        claimed = self._execute(
            "UPDATE runs SET status = 'running', finished_at = NULL, host = ?, pid = ?, process = ?,"
            " attempts = attempts + 1 WHERE id = ? AND status = ? AND pid IS ?",
            (socket.gethostname(), os.getpid(), process_identity(os.getpid()), run_id, status, pid),
        ).rowcount
        if claimed:
            # What the lost attempt left half done is closed; its paid calls stay recorded against it.
            self._write(
                "UPDATE improver_runs SET error = 'interrupted; the run was resumed', finished_at = ?"
                " WHERE run_id = ? AND finished_at IS NULL",
                (now(), run_id),
            )
        return bool(claimed)

    def finish_run(self, run_id: str, status: str, result: dict[str, Any] | None) -> None:
        self._write(
            "UPDATE runs SET status = ?, finished_at = ?, result = ? WHERE id = ?",
            (status, now(), self._json(result, "the run's result") if result is not None else None, run_id),
        )

    # --- programs and improver runs -------------------------------------------------------

    def save_program(self, source: str, kind: str) -> str:
        digest = program_hash(source)
        self._write("INSERT OR IGNORE INTO programs (hash, kind, source) VALUES (?, ?, ?)", (digest, kind, source))
        return digest

    def start_improver_run(
        self, run_id: str, *, purpose: str, improver: str, initial_solution: str, parent_id: int | None
    ) -> int:
        improver_hash = self.save_program(improver, "improver")
        initial_kind = "improver" if purpose == "self-improvement" else "solution"
        initial_hash = self.save_program(initial_solution, initial_kind)
        return self._write(
            "INSERT INTO improver_runs (run_id, parent_id, purpose, improver_hash, initial_hash, started_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, parent_id, purpose, improver_hash, initial_hash, now()),
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
        solution_hash = self.save_program(solution, solution_kind) if solution is not None else None
        self._write(
            "UPDATE improver_runs SET solution_hash = ?, error = ?, lm_calls = ?, lm_responses = ?,"
            " utility_calls = ?, seconds = ?, finished_at = ? WHERE id = ?",
            (solution_hash, error, lm_calls, lm_responses, utility_calls, seconds, now(), improver_run_id),
        )

    # --- what improver runs produce -------------------------------------------------------

    def record_evaluation(self, run_id: str, improver_run_id: int | None, solution: str, row: EvaluationRow) -> None:
        solution_hash = self.save_program(solution, "solution")
        self._write(
            "INSERT INTO evaluations (run_id, improver_run_id, solution_hash, task, split, score, instances, invalid,"
            " timeouts, errors, scorer_errors, scorer_problems, problem, failure, seconds, violations, replayed,"
            " node, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                improver_run_id,
                solution_hash,
                row.task,
                row.split,
                row.score,
                row.instances,
                row.invalid,
                row.timeouts,
                row.errors,
                row.scorer_errors,
                self._json([list(pair) for pair in row.scorer_problems], "an evaluation's scorer problems"),
                row.problem,
                row.failure,
                row.seconds,
                self._json(list(row.violations), "an evaluation's violations"),
                int(row.replayed),
                row.node,
                now(),
            ),
        )

    def record_lm_call(self, run_id: str, improver_run_id: int | None, call: CallRow) -> None:
        self._write(
            "INSERT INTO lm_calls (run_id, improver_run_id, backend, request, responses, prompt_tokens,"
            " completion_tokens, latency_seconds, error, cache_hit, cost_usd, replayed, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                improver_run_id,
                call.backend,
                self._json(call.request(), "a language-model request"),
                self._json(list(call.responses), "a language-model call's responses"),
                call.prompt_tokens,
                call.completion_tokens,
                call.latency_seconds,
                call.error,
                int(call.cache_hit),
                call.cost_usd,
                int(call.replayed),
                now(),
            ),
        )

    def record_event(self, run_id: str, improver_run_id: int | None, kind: str, detail: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO events (run_id, improver_run_id, kind, detail, created_at) VALUES (?, ?, ?, ?, ?)",
            # What JSON cannot hold is kept as its text: an object (str of it), NaN or an infinity ('nan', 'inf').
            (run_id, improver_run_id, kind, json.dumps(finite_numbers(detail), allow_nan=False, default=str), now()),
        )

    def record_iteration(self, run_id: str, row: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO iterations (run_id, iteration, improver_hash, meta_utility_val, meta_utility_test,"
            " candidate_hash, candidate_val, candidate_test, accepted, error, improver_run_id, spent_usd)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                row["iteration"],
                row["improver_hash"],
                row["meta_utility_val"],
                row["meta_utility_test"],
                row.get("candidate_hash"),
                row.get("candidate_val"),
                row.get("candidate_test"),
                int(row["accepted"]),
                row.get("error"),
                row.get("improver_run_id"),
                row.get("spent_usd"),
            ),
        )
