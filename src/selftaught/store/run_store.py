"""The SQLite record of runs, written only by the host; every write commits at once so a crash loses nothing paid for."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from selftaught.errors import StoreError
from selftaught.llm.budgeted import LanguageModelCall
from selftaught.store.schema import MIGRATIONS
from selftaught.tasks.evaluation import Evaluation

DEFAULT_STORE = Path("selftaught-runs") / "runs.sqlite"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def program_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class RunStore:
    """Writes and reads one store file; safe to share between threads of the host."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self._connection.row_factory = sqlite3.Row
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except (sqlite3.Error, OSError) as error:
            raise StoreError(f"cannot open the run store {path}: {error}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._connection.close()

    def _migrate(self) -> None:
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        applied = {row[0] for row in self._connection.execute("SELECT name FROM migrations")}
        for name, script in MIGRATIONS:
            if name not in applied:
                self._connection.executescript(
                    f"BEGIN; {script}; INSERT INTO migrations VALUES ('{name}', '{now()}'); COMMIT;"
                )

    def _write(self, sql: str, parameters: tuple[Any, ...]) -> int:
        with self._lock:
            try:
                cursor = self._connection.execute(sql, parameters)
            except sqlite3.Error as error:
                raise StoreError(f"cannot write to the run store {self.path}: {error}") from None
            return int(cursor.lastrowid or 0)

    # --- runs -----------------------------------------------------------------------------

    def create_run(self, *, command: str, task: str, model: str, seed: int, config: dict[str, Any]) -> str:
        run_id = new_run_id()
        self._write(
            "INSERT INTO runs (id, command, task, model, seed, config, status, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, command, task, model, seed, json.dumps(config), "running", now()),
        )
        return run_id

    def finish_run(self, run_id: str, status: str, result: dict[str, Any] | None) -> None:
        self._write(
            "UPDATE runs SET status = ?, finished_at = ?, result = ? WHERE id = ?",
            (status, now(), json.dumps(result) if result is not None else None, run_id),
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

    def final_improver(self, run_id: str) -> str | None:
        """The improver a `run` ended with, or None when there is no such run."""
        with self._lock:
            row = self._connection.execute(
                "SELECT programs.source FROM iterations JOIN programs ON programs.hash = iterations.improver_hash"
                " WHERE iterations.run_id = ? ORDER BY iterations.iteration DESC LIMIT 1",
                (run_id,),
            ).fetchone()
        return None if row is None else str(row[0])

    # --- what improver runs produce -------------------------------------------------------

    def record_evaluation(
        self, run_id: str, improver_run_id: int | None, solution: str, evaluation: Evaluation
    ) -> None:
        solution_hash = self.save_program(solution, "solution")
        self._write(
            "INSERT INTO evaluations (run_id, improver_run_id, solution_hash, task, split, score, instances, invalid,"
            " timeouts, errors, problem, failure, seconds, violations, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                improver_run_id,
                solution_hash,
                evaluation.task,
                evaluation.split,
                evaluation.score,
                evaluation.instances,
                evaluation.invalid,
                evaluation.timeouts,
                evaluation.errors,
                evaluation.problem,
                evaluation.failure,
                evaluation.seconds,
                json.dumps(list(evaluation.violations)),
                now(),
            ),
        )

    def record_lm_call(self, run_id: str, improver_run_id: int | None, call: LanguageModelCall) -> None:
        request = {
            k: v
            for k, v in asdict(call).items()
            if k in ("system", "message", "n", "temperature", "max_tokens", "seed")
        }
        self._write(
            "INSERT INTO lm_calls (run_id, improver_run_id, backend, request, responses, prompt_tokens,"
            " completion_tokens, latency_seconds, error, cache_hit, cost_usd, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                improver_run_id,
                call.backend,
                json.dumps(request),
                json.dumps(list(call.responses)),
                call.prompt_tokens,
                call.completion_tokens,
                call.latency_seconds,
                call.error,
                int(call.cached),
                call.cost_usd,
                now(),
            ),
        )

    def record_event(self, run_id: str, improver_run_id: int | None, kind: str, detail: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO events (run_id, improver_run_id, kind, detail, created_at) VALUES (?, ?, ?, ?, ?)",
            (run_id, improver_run_id, kind, json.dumps(detail, default=str), now()),
        )

    def record_iteration(self, run_id: str, row: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO iterations (run_id, iteration, improver_hash, meta_utility_val, meta_utility_test,"
            " candidate_hash, candidate_val, candidate_test, accepted, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ),
        )
