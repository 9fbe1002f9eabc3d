"""Reads a store without writing to it: safe beside a run that is writing, from several processes, and on a bad file.

A damaged or hostile file gives a StoreError: every row is checked as it is read, and every
statement stopped past a budget of SQLite steps.
"""

from __future__ import annotations

import shlex
import socket
import sqlite3
from collections.abc import Collection
from pathlib import Path
from typing import Any

from selftaught.errors import StoreError
from selftaught.store.connection import StepBudget, connect_read_only, steps_for
from selftaught.store.migrations import readable_missing_migrations, store_files
from selftaught.store.processes import process_alive, process_identity
from selftaught.store.row_checks import Column, decoded_row, row_name

#: A run whose process died without a word (SIGKILL, power loss) is shown as this.
KILLED = "killed"

#: The columns the queries compute rather than read, with their types: checked as a table's are.
_COMPUTED: dict[str, Column] = {
    "iteration_rows": ("INTEGER", True),
    "best_val": ("REAL", False),
    "cost_usd": ("REAL", True),
    "lm_calls": ("INTEGER", True),
    "live_lm_calls": ("INTEGER", True),
    "replayed_lm_calls": ("INTEGER", True),
    "lm_responses": ("INTEGER", True),
    "evaluations": ("INTEGER", True),
    "improver_runs": ("INTEGER", True),
    "events": ("INTEGER", True),
    "iterations": ("INTEGER", True),
}


def answered_in_full(call: dict[str, Any]) -> bool:
    """A call (an `lm_calls` row as read) that brought every response it asked for: only those are replayed or
    exported as answers."""
    return call["error"] is None and len(call["responses"]) == call["request"]["n"]


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
    """The `Reader` of one SQLite store file. Rows come back as plain dicts; JSON columns are decoded.

    It never writes: its connection is read-only, and a store an older selftaught wrote is refused
    rather than migrated (`selftaught.store.migrations.ensure_current_schema` upgrades it). It trusts
    nothing of the file: what it reads must be plain tables, each statement stops after a budget of
    SQLite steps proportional to the file's size (or at a signal, whose KeyboardInterrupt it raises),
    and every row read is checked (`selftaught.store.row_checks`): a value of the wrong type, text that
    is not UTF-8, a number that is not finite or JSON of the wrong shape is a StoreError naming it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise StoreError(f"no run store at {path} (runs are recorded there by `selftaught run`; see --store)")
        self._budget = StepBudget(steps_for(*store_files(path)))
        try:
            self._connection = connect_read_only(path, self._budget)
        except (sqlite3.Error, UnicodeDecodeError) as error:
            raise StoreError(f"cannot read the run store {path}: {self._budget.describe(error)}") from None
        try:
            missing = readable_missing_migrations(self._connection, path)
        except (sqlite3.Error, UnicodeDecodeError) as error:
            self._connection.close()
            raise StoreError(f"cannot read the run store {path}: {self._budget.describe(error)}") from None
        except BaseException:
            self._connection.close()
            raise
        if missing:
            self._connection.close()
            raise StoreError(
                f"the run store {path} was written by an older selftaught;"
                f" `selftaught runs --store {shlex.quote(str(path))}` upgrades it"
            )

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _rows(
        self, sql: str, parameters: tuple[Any, ...] | dict[str, Any] = (), table: str | None = None
    ) -> list[dict[str, Any]]:
        """The rows of a query of `table` (or of computed columns alone), each checked, JSON columns decoded."""
        self._budget.renew(steps_for(*store_files(self.path)))  # the file grows while a run writes it
        try:
            rows = [dict(row) for row in self._connection.execute(sql, parameters).fetchall()]
        except (sqlite3.Error, UnicodeDecodeError) as error:
            raise StoreError(f"cannot read the run store {self.path}: {self._budget.describe(error)}") from None
        for row in rows:
            problem = decoded_row(table, row, _COMPUTED)
            if problem is not None:
                column, what = problem
                raise StoreError(
                    f"the run store {self.path} holds a malformed record: {column} of {row_name(table, row)} {what};"
                    " the file is damaged or was not written by selftaught"
                )
        return rows

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
            " FROM runs ORDER BY started_at, id",
            table="runs",
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
            table="programs",
        )
        return str(rows[0]["source"]) if rows else None

    def has_run(self, run_id: str) -> bool:
        return bool(self._rows("SELECT id FROM runs WHERE id = ?", (run_id,), "runs"))

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
        rows = self._rows("SELECT * FROM runs WHERE id = ?", (run_id,), "runs") or self._rows(
            "SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY id", (_like_prefix(run_id),), "runs"
        )
        if not rows:
            return None
        if len(rows) > 1:
            ids = ", ".join(str(row["id"]) for row in rows[:5])
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
                "SELECT id FROM improver_runs WHERE run_id = ? AND purpose = 'speculative meta-utility'",
                (run_id,),
                "improver_runs",
            )
        } - asked
        rows = self._rows(
            "SELECT evaluations.id, evaluations.solution_hash, evaluations.score, evaluations.improver_run_id"
            " FROM evaluations JOIN runs ON runs.id = evaluations.run_id"
            " WHERE evaluations.run_id = ? AND evaluations.split = 'validation' AND evaluations.task = runs.task"
            " ORDER BY evaluations.score DESC, evaluations.id",
            (run_id,),
            "evaluations",
        )
        best = next((row for row in rows if row["improver_run_id"] not in unasked), None)
        if best is None:
            return None
        tests = self._rows(
            "SELECT score FROM evaluations WHERE run_id = ? AND split = 'test' AND solution_hash = ? ORDER BY id LIMIT 1",
            (run_id, best["solution_hash"]),
            "evaluations",
        )
        return {
            "hash": best["solution_hash"],
            "utility_val": best["score"],
            "utility_test": tests[0]["score"] if tests else None,
            "improver_run_id": best["improver_run_id"],
            "source": self.program(best["solution_hash"]),
        }

    def iterations(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM iterations WHERE run_id = ? ORDER BY iteration", (run_id,), "iterations")

    def program(self, program_hash: str) -> str:
        rows = self._rows("SELECT source FROM programs WHERE hash = ?", (program_hash,), "programs")
        if not rows:
            raise StoreError(f"program {program_hash[:12]} is missing from {self.path}")
        return str(rows[0]["source"])

    def improver_runs(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM improver_runs WHERE run_id = ? ORDER BY id", (run_id,), "improver_runs")

    def evaluations(self, run_id: str) -> list[dict[str, Any]]:
        return _decoded_evaluations(
            self._rows("SELECT * FROM evaluations WHERE run_id = ? ORDER BY id", (run_id,), "evaluations")
        )

    #: Kept as a method for the callers that find it on the reader.
    answered_in_full = staticmethod(answered_in_full)

    def lm_calls(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM lm_calls WHERE run_id = ? ORDER BY id", (run_id,), "lm_calls")

    def events(self, run_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM events WHERE run_id = ? ORDER BY id", (run_id,), "events")

    def programs(self, hashes: set[str]) -> dict[str, dict[str, Any]]:
        if not hashes:
            return {}
        marks = ",".join("?" * len(hashes))
        rows = self._rows(f"SELECT * FROM programs WHERE hash IN ({marks})", tuple(sorted(hashes)), "programs")
        return {row["hash"]: row for row in rows}

    # --- slices of a run's record, for a reader that shows one page of a store of any size -------

    def lm_call_page(self, run_id: str, offset: int, limit: int) -> list[dict[str, Any]]:
        """`limit` of the run's language-model calls from the `offset`-th on, in the order they were made."""
        return self._rows(
            "SELECT * FROM lm_calls WHERE run_id = ? ORDER BY id LIMIT ? OFFSET ?", (run_id, limit, offset), "lm_calls"
        )

    def lm_call_timeline(self, run_id: str) -> list[dict[str, Any]]:
        """The run's calls in order without their text: when each was made (`created_at`) and its `cost_usd`."""
        return self._rows(
            "SELECT created_at, cost_usd FROM lm_calls WHERE run_id = ? ORDER BY id", (run_id,), "lm_calls"
        )

    def progress(self, run_id: str) -> dict[str, int]:
        """How many rows of each kind the run has recorded so far: cheap (the indexes alone), for polling."""
        [row] = self._rows(
            "SELECT (SELECT COUNT(*) FROM lm_calls WHERE run_id = :run) AS lm_calls,"
            " (SELECT COUNT(*) FROM evaluations WHERE run_id = :run) AS evaluations,"
            " (SELECT COUNT(*) FROM improver_runs WHERE run_id = :run) AS improver_runs,"
            " (SELECT COUNT(*) FROM events WHERE run_id = :run) AS events,"
            " (SELECT COUNT(*) FROM iterations WHERE run_id = :run) AS iterations",
            {"run": run_id},
        )
        return row

    def improver_run_evaluations(self, run_id: str, improver_run_ids: Collection[int]) -> list[dict[str, Any]]:
        """The evaluations of the solutions these improver runs of the run tried, in order."""
        ids = sorted(set(improver_run_ids))
        marks = ",".join("?" * len(ids))
        return _decoded_evaluations(
            self._rows(
                f"SELECT * FROM evaluations WHERE run_id = ? AND improver_run_id IN ({marks}) ORDER BY id",
                (run_id, *ids),
                "evaluations",
            )
        )

    def improver_run_events(self, run_id: str, improver_run_ids: Collection[int]) -> list[dict[str, Any]]:
        """What happened in these improver runs of the run (sandbox violations, tampering), in order."""
        ids = sorted(set(improver_run_ids))
        marks = ",".join("?" * len(ids))
        return self._rows(
            f"SELECT * FROM events WHERE run_id = ? AND improver_run_id IN ({marks}) ORDER BY id", (run_id, *ids), "events"
        )

    def returned_solution_scores(self, run_id: str) -> dict[int, dict[str, float]]:
        """For each improver run of the run that returned a solution: that solution's score on each split it
        was evaluated on for that run (by improver run id, then split)."""
        rows = self._rows(
            "SELECT evaluations.improver_run_id, evaluations.split, MAX(evaluations.score) AS score"
            " FROM evaluations JOIN improver_runs ON improver_runs.id = evaluations.improver_run_id"
            " WHERE evaluations.run_id = ? AND evaluations.solution_hash = improver_runs.solution_hash"
            " GROUP BY evaluations.improver_run_id, evaluations.split",
            (run_id,),
            "evaluations",
        )
        scores: dict[int, dict[str, float]] = {}
        for row in rows:
            scores.setdefault(row["improver_run_id"], {})[row["split"]] = row["score"]
        return scores


def _decoded_evaluations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        row["scorer_problems"] = [tuple(pair) for pair in row["scorer_problems"]]
    return rows


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _decoded_run(row: dict[str, Any]) -> dict[str, Any]:
    row["status"] = effective_status(row)
    return row
