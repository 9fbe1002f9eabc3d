"""The SQLite record of runs, written only by the host; every write commits at once so a crash loses nothing paid for."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import sqlite3
import threading
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selftaught.errors import StoreError
from selftaught.store.schema import MIGRATIONS

if TYPE_CHECKING:
    # Annotations only: the store sits beneath the layers that make these rows, and must not import them.
    from selftaught.llm.budgeted import LanguageModelCall
    from selftaught.tasks.evaluation import Evaluation

DEFAULT_STORE = Path("selftaught-runs") / "runs.sqlite"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def program_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def describe_sqlite_error(error: Exception) -> str:
    """SQLite's message, with what to do about the two failures users meet: a lock and a damaged file."""
    message = str(error)
    if "locked" in message or "busy" in message:
        return f"{message} (another process holds it; wait for it or stop it)"
    if "not a database" in message or "malformed" in message:
        return f"{message} (the file is damaged or is not a selftaught store)"
    return message


def process_identity(pid: int) -> str | None:
    """The boot and the start time of process `pid`: unlike the pid, never the same for two processes."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        started = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None
    return f"{boot}:{started}"


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class RunStore:
    """Writes and reads one store file; safe to share between threads of the host."""

    def __init__(self, path: Path, busy_timeout_seconds: float = 30.0) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_seconds
            )
            self._connection.row_factory = sqlite3.Row
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except (sqlite3.Error, OSError) as error:
            raise StoreError(f"cannot open the run store {path}: {describe_sqlite_error(error)}") from None
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

    def _execute(self, sql: str, parameters: tuple[Any, ...]) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._connection.execute(sql, parameters)
            except sqlite3.Error as error:
                raise StoreError(f"cannot write to the run store {self.path}: {describe_sqlite_error(error)}") from None

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
                json.dumps(config),
                json.dumps(options),
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

    # --- what improver runs produce -------------------------------------------------------

    def record_evaluation(
        self, run_id: str, improver_run_id: int | None, solution: str, evaluation: Evaluation
    ) -> None:
        solution_hash = self.save_program(solution, "solution")
        self._write(
            "INSERT INTO evaluations (run_id, improver_run_id, solution_hash, task, split, score, instances, invalid,"
            " timeouts, errors, scorer_errors, scorer_problems, problem, failure, seconds, violations, replayed,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                evaluation.scorer_errors,
                json.dumps([list(pair) for pair in evaluation.scorer_problems]),
                evaluation.problem,
                evaluation.failure,
                evaluation.seconds,
                json.dumps(list(evaluation.violations)),
                int(evaluation.replayed),
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
            " completion_tokens, latency_seconds, error, cache_hit, cost_usd, replayed, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                int(call.replayed),
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
