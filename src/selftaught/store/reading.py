"""Reads a store without writing to it: safe beside a run that is writing, and from several processes."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any

from selftaught.errors import StoreError
from selftaught.store.run_store import RunStore, describe_sqlite_error, process_identity
from selftaught.store.schema import MIGRATIONS

#: A run whose process died without a word (SIGKILL, power loss) is shown as this.
KILLED = "killed"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    try:  # a killed process not yet reaped by its parent is a zombie: dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def effective_status(run: dict[str, Any]) -> str:
    """The recorded status, except that a 'running' run whose process is gone from this machine was killed.

    A pid may belong to another process by now (after a reboot, say): the process's identity tells.
    """
    status = str(run["status"])
    pid = run.get("pid")
    if status != "running" or run.get("host") != socket.gethostname() or pid is None:
        return status
    recorded = run.get("process")
    if not process_alive(pid) or (recorded is not None and process_identity(pid) != recorded):
        return KILLED
    return status


class StoreReader:
    """Queries of one store file. Rows come back as plain dicts; JSON columns are decoded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise StoreError(f"no run store at {path} (runs are recorded there by `selftaught run`; see --store)")
        try:
            self._connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            self._connection.row_factory = sqlite3.Row
            applied = {row[0] for row in self._connection.execute("SELECT name FROM migrations")}
        except sqlite3.Error as error:
            raise StoreError(f"cannot read the run store {path}: {describe_sqlite_error(error)}") from None
        if any(name not in applied for name, _ in MIGRATIONS):
            # Written by an older version: bring its schema up to date once, then read.
            self._connection.close()
            RunStore(path).close()
            self._connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            self._connection.row_factory = sqlite3.Row

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _rows(self, sql: str, parameters: tuple[Any, ...] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        try:
            return [dict(row) for row in self._connection.execute(sql, parameters).fetchall()]
        except sqlite3.Error as error:
            raise StoreError(f"cannot read the run store {self.path}: {describe_sqlite_error(error)}") from None

    # --- runs -----------------------------------------------------------------------------

    def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first, with its iteration rows (iteration 0 among them), best validation
        meta-utility and live cost."""
        rows = self._rows(
            "SELECT runs.*,"
            " (SELECT COUNT(*) FROM iterations WHERE iterations.run_id = runs.id) AS iteration_rows,"
            " (SELECT MAX(meta_utility_val) FROM iterations WHERE iterations.run_id = runs.id) AS best_val,"
            " (SELECT COALESCE(SUM(cost_usd), 0) FROM lm_calls WHERE lm_calls.run_id = runs.id AND replayed = 0)"
            " AS cost_usd"
            " FROM runs ORDER BY started_at, id"
        )
        return [_decoded_run(row) for row in rows]

    def final_improver(self, run_id: str) -> str | None:
        """The improver a `run` (by its id or a unique id prefix) ended with, or None when there is no such run."""
        run = self.find_run(run_id)
        if run is None:
            return None
        rows = self._rows(
            "SELECT programs.source FROM iterations JOIN programs ON programs.hash = iterations.improver_hash"
            " WHERE iterations.run_id = ? ORDER BY iterations.iteration DESC LIMIT 1",
            (run["id"],),
        )
        return str(rows[0]["source"]) if rows else None

    def has_run(self, run_id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM runs WHERE id = ?", (run_id,)))

    def run(self, run_id: str) -> dict[str, Any]:
        """The run with this id, or with this unique id prefix."""
        run = self.find_run(run_id)
        if run is None:
            raise StoreError(f"no run {run_id!r} in {self.path} (`selftaught runs` lists them)")
        return run

    def find_run(self, run_id: str) -> dict[str, Any] | None:
        """The run with this id, or with this unique id prefix; None when no run matches.

        A prefix that several runs share is an error, never a guess between them.
        """
        rows = self._rows("SELECT * FROM runs WHERE id = ?", (run_id,)) or self._rows(
            "SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY id", (_like_prefix(run_id),)
        )
        if not rows:
            return None
        if len(rows) > 1:
            ids = ", ".join(row["id"] for row in rows[:5])
            raise StoreError(f"run id {run_id!r} is ambiguous in {self.path}: {ids}")
        return _decoded_run(rows[0])

    # --- what a run recorded ----------------------------------------------------------------

    def counts(self, run_id: str) -> dict[str, Any]:
        """How many language-model calls (live ones: not replayed, not cached; replayed ones: served from the
        run's record when it was resumed) and evaluations, the responses of the calls not replayed, and the cost."""
        [row] = self._rows(
            "SELECT (SELECT COUNT(*) FROM lm_calls WHERE run_id = :run) AS lm_calls,"
            " (SELECT COUNT(*) FROM lm_calls WHERE run_id = :run AND replayed = 0 AND cache_hit = 0) AS live_lm_calls,"
            " (SELECT COUNT(*) FROM lm_calls WHERE run_id = :run AND replayed = 1) AS replayed_lm_calls,"
            " (SELECT COALESCE(SUM(json_array_length(responses)), 0) FROM lm_calls"
            "  WHERE run_id = :run AND replayed = 0) AS lm_responses,"
            " (SELECT COALESCE(SUM(cost_usd), 0) FROM lm_calls WHERE run_id = :run AND replayed = 0) AS cost_usd,"
            " (SELECT COUNT(*) FROM evaluations WHERE run_id = :run) AS evaluations",
            {"run": run_id},
        )
        return row

    def best_solution(self, run_id: str) -> dict[str, Any] | None:
        """The run's downstream solution with the best validation score (the first found, among equals).

        Its test score comes with it when the run scored it on test (for reporting only: the run
        never chose by test). Solutions of candidates scored ahead that no improver asked about
        (`--speculate`) are left out, so that speculation changes no result, even in a run stopped
        and resumed. None when the run evaluated no solution on validation.
        """
        # Runs started ahead for a candidate (`--speculate`) are the run's once an event says it was asked about
        # (the loop's names: loop/meta_utility.py); one never asked about, or whose attempt stopped first, is not.
        asked = {
            improver_run_id
            for event in self.events(run_id)
            if event["kind"] == "speculation_asked"
            for improver_run_id in event["detail"].get("improver_run_ids", [])
        }
        unasked = {
            row["id"]
            for row in self._rows(
                "SELECT id FROM improver_runs WHERE run_id = ? AND purpose = 'speculative meta-utility'", (run_id,)
            )
        } - asked
        rows = self._rows(
            "SELECT evaluations.solution_hash, evaluations.score, evaluations.improver_run_id"
            " FROM evaluations JOIN runs ON runs.id = evaluations.run_id"
            " WHERE evaluations.run_id = ? AND evaluations.split = 'validation' AND evaluations.task = runs.task"
            " ORDER BY evaluations.score DESC, evaluations.id",
            (run_id,),
        )
        best = next((row for row in rows if row["improver_run_id"] not in unasked), None)
        if best is None:
            return None
        tests = self._rows(
            "SELECT score FROM evaluations WHERE run_id = ? AND split = 'test' AND solution_hash = ? ORDER BY id LIMIT 1",
            (run_id, best["solution_hash"]),
        )
        return {
            "hash": best["solution_hash"],
            "utility_val": best["score"],
            "utility_test": tests[0]["score"] if tests else None,
            "improver_run_id": best["improver_run_id"],
            "source": self.program(best["solution_hash"]),
        }

    def iterations(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM iterations WHERE run_id = ? ORDER BY iteration", (run_id,))

    def program(self, program_hash: str) -> str:
        rows = self._rows("SELECT source FROM programs WHERE hash = ?", (program_hash,))
        if not rows:
            raise StoreError(f"program {program_hash[:12]} is missing from {self.path}")
        return str(rows[0]["source"])

    def improver_runs(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM improver_runs WHERE run_id = ? ORDER BY id", (run_id,))

    def evaluations(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM evaluations WHERE run_id = ? ORDER BY id", (run_id,))
        for row in rows:
            row["violations"] = json.loads(row["violations"])
            row["scorer_problems"] = [tuple(pair) for pair in json.loads(row["scorer_problems"])]
        return rows

    @staticmethod
    def answered_in_full(call: dict[str, Any]) -> bool:
        """A call that brought every response it asked for: only those are replayed or exported as answers."""
        return call["error"] is None and len(call["responses"]) == call["request"]["n"]

    def lm_calls(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM lm_calls WHERE run_id = ? ORDER BY id", (run_id,))
        for row in rows:
            row["request"] = json.loads(row["request"])
            row["responses"] = json.loads(row["responses"])
        return rows

    def events(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM events WHERE run_id = ? ORDER BY id", (run_id,))
        for row in rows:
            row["detail"] = json.loads(row["detail"])
        return rows

    def programs(self, hashes: set[str]) -> dict[str, dict[str, Any]]:
        if not hashes:
            return {}
        marks = ",".join("?" * len(hashes))
        rows = self._rows(f"SELECT * FROM programs WHERE hash IN ({marks})", tuple(sorted(hashes)))
        return {row["hash"]: row for row in rows}


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _decoded_run(row: dict[str, Any]) -> dict[str, Any]:
    for column in ("config", "options", "result"):
        if row.get(column) is not None:
            row[column] = json.loads(row[column])
    row["status"] = effective_status(row)
    return row
