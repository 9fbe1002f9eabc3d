"""The store's reader with what only the dashboard asks: a run for a page, and the runs list paged in SQL.

The runs list is polled every second and a store may hold tens of thousands of runs: its version is a
few counts and the runs still running, and a page of it reads its fifty runs, filtered, sorted and
paged by SQLite, never every run and its iterations in Python.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from selftaught.errors import StoreError
from selftaught.store.connection import steps_for
from selftaught.store.migrations import store_files
from selftaught.store.reading import KILLED, StoreReader, effective_status

#: Run ids as selftaught makes them: such an id is its own segment of a page's address.
_PLAIN_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]*")
#: Any other id (a '/', a '?', a space...) is written as this mark and its UTF-8 in hex: never confused with a route.
_ENCODED = "~"
#: The runs list's sortable columns, by the key of a listed run they sort on.
SORTABLE = ("started_at", "status", "command", "task", "model", "seed", "iterations", "best_val", "best_test", "cost_usd")  # fmt: skip


class NotFound(Exception):
    """What a page is about is not in the store (a run, a program): the page answers 404."""


def run_segment(run_id: Any) -> str:
    """The run id as one segment of an address, whatever it holds: `run_id_of` reads it back."""
    shown = str(run_id)
    if _PLAIN_ID.fullmatch(shown):
        return shown
    return _ENCODED + shown.encode("utf-8", "surrogatepass").hex()


def run_id_of(segment: str) -> str:
    """The run id a segment of an address names (see `run_segment`)."""
    if _PLAIN_ID.fullmatch(segment):
        return segment
    try:
        if not segment.startswith(_ENCODED):
            raise ValueError(segment)
        return bytes.fromhex(segment.removeprefix(_ENCODED)).decode("utf-8", "surrogatepass")
    except ValueError:
        raise NotFound(
            f"{segment[:80]!r} is no run id (selftaught writes ids of letters, digits, '.', '_' and '-')"
        ) from None


@dataclass(frozen=True)
class RunsQuery:
    """The runs list's filters (empty: any), its sort column and direction, and the page (from 1)."""

    status: str = ""
    command: str = ""
    text: str = ""
    sort: str = "started_at"
    descending: bool = True
    page: int = 1


NUMBER, TEXT, INTEGER = "'integer', 'real'", "'text'", "'integer'"


def _json_field(column: str, field: str, types: str = NUMBER) -> str:
    """A field of a JSON column when its JSON type is among `types`, else NULL: a malformed one is no value."""
    return f"CASE WHEN json_valid({column}) AND json_type({column}, '$.{field}') IN ({types}) THEN json_extract({column}, '$.{field}') END"


_BEST_ITERATION = "FROM iterations WHERE run_id = listed.id ORDER BY meta_utility_val DESC, iteration LIMIT 1"
#: What a listed run shows and sorts on: a loop's best validation meta-utility (the first among equals) with its
#: test, or an improve or meta-utility run's own scores from its result; its iteration rows; its live cost.
_COMPUTED = {
    "iterations": "(SELECT COUNT(*) FROM iterations WHERE run_id = listed.id)",
    "best_val": "COALESCE((SELECT MAX(meta_utility_val) FROM iterations WHERE run_id = listed.id),"
    f" {_json_field('result', 'utility_val')},"
    f" {_json_field('result', 'meta_utility_val')})",
    "best_test": f"CASE WHEN EXISTS (SELECT 1 FROM iterations WHERE run_id = listed.id)"
    f" THEN (SELECT meta_utility_test {_BEST_ITERATION})"
    f" WHEN {_json_field('result', 'utility_val')} IS NOT NULL THEN {_json_field('result', 'utility_test')}"
    f" ELSE {_json_field('result', 'meta_utility_test')} END",
    # TOTAL, not SUM: it never fails on an integer overflow.
    "cost_usd": "(SELECT TOTAL(cost_usd) FROM lm_calls WHERE run_id = listed.id AND replayed = 0)",
}
#: A shown run's columns beyond its row: the computed ones, and the two settings of its profile the list shows.
_DETAILS = ", ".join(
    [f"{expression} AS {name}" for name, expression in _COMPUTED.items()]
    + [
        f"{_json_field('config', 'name', TEXT)} AS profile",
        f"{_json_field('config', 'iterations', INTEGER)} AS iterations_planned",
    ]
)
#: Every run with its status as a page shows it: `running` whose process is gone is `killed` (:killed, from Python).
_LISTED = (
    "WITH killed(id) AS (SELECT value FROM json_each(:killed)),"
    " listed AS (SELECT id, command, task, model, seed, started_at, finished_at, attempts, config, result,"
    " CASE WHEN id IN killed THEN 'killed' ELSE status END AS status FROM runs) "
)
_STATUSES = "SELECT DISTINCT status FROM listed ORDER BY status"
_MATCHING = (
    " WHERE (:status = '' OR status = :status) AND (:command = '' OR command = :command) AND (:text = ''"
    " OR instr(lower(id), :text) OR instr(lower(task), :text) OR instr(lower(model), :text))"
)


class PageReader(StoreReader):
    """A `StoreReader` with the dashboard's own queries; it writes nothing either.

    Its queries return values unchecked, under the reader's step budget: the runs list shows a malformed
    value of one run as such (see `dashboard.fields`) and every other run as it is, where the reader's
    own methods refuse the whole query.
    """

    def _query(self, sql: str, parameters: dict[str, Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        self._budget.renew(steps_for(*store_files(self.path)))
        try:
            return [dict(row) for row in self._connection.execute(sql, parameters).fetchall()]
        except (sqlite3.Error, UnicodeDecodeError) as error:
            raise StoreError(f"cannot read the run store {self.path}: {self._budget.describe(error)}") from None

    def page_run(self, run_id: str) -> dict[str, Any]:
        """The run with this id, or with this unique id prefix; NotFound when there is none."""
        rows = self._query("SELECT id FROM runs WHERE id = ?", (run_id,))
        if not rows:
            like = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = self._query("SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT 2", (like,))
        if len(rows) != 1:
            several = f"several runs start with {run_id!r}" if rows else f"no run {run_id!r}"
            raise NotFound(f"{several} in {self.path} (the runs list shows them)")
        run = self.find_run(rows[0]["id"])
        if run is None:  # gone between the two queries
            raise NotFound(f"no run {run_id!r} in {self.path}")
        return run

    def counts(self, run_id: str) -> dict[str, Any]:
        """The reader's counts of a run, unchecked: a cost whose sum overflows is shown as such, and calls whose
        responses are not JSON count no response, rather than the run's page failing on them."""
        [row] = self._query(
            "SELECT (SELECT COUNT(*) FROM lm_calls WHERE run_id = :run) AS lm_calls,"
            " (SELECT COUNT(*) FROM lm_calls WHERE run_id = :run AND replayed = 0 AND cache_hit = 0) AS live_lm_calls,"
            " (SELECT COUNT(*) FROM lm_calls WHERE run_id = :run AND replayed = 1) AS replayed_lm_calls,"
            " (SELECT TOTAL(CASE WHEN json_valid(responses) THEN json_array_length(responses) END) FROM lm_calls"
            "  WHERE run_id = :run AND replayed = 0) AS lm_responses,"
            " (SELECT TOTAL(cost_usd) FROM lm_calls WHERE run_id = :run AND replayed = 0) AS cost_usd,"
            " (SELECT COUNT(*) FROM evaluations WHERE run_id = :run) AS evaluations",
            {"run": run_id},
        )
        return {**row, "lm_responses": int(row["lm_responses"])}

    def runs_of(self, command: str) -> list[dict[str, Any]]:
        """Every run of `command`, oldest first, each read and checked by the reader; one whose row is malformed
        comes as its id and why (`malformed`), so that it takes no other run's row down with it."""
        runs = []
        for row in self._query("SELECT id FROM runs WHERE command = ? ORDER BY started_at, id", (command,)):
            try:
                run = self.find_run(row["id"]) if _text(row["id"]) else None
            except StoreError as error:
                run = None
                runs.append({"id": row["id"], "malformed": str(error)})
            if run is not None:
                runs.append(run)
        return runs

    def runs_version(self) -> str:
        """Changes whenever the runs list would: a run added or removed, an iteration or a call recorded, or a
        running run's status or attempt changing (those are the only rows changed in place)."""
        [counts] = self._query(
            "SELECT (SELECT COUNT(*) FROM runs) AS runs, (SELECT MAX(rowid) FROM runs) AS last_run,"
            " (SELECT MAX(rowid) FROM iterations) AS last_iteration, (SELECT MAX(rowid) FROM lm_calls) AS last_call"
        )
        running = self._running()
        shown = [[run["id"], _shown_status(run), run["attempts"]] for run in running]
        return fingerprint([counts, shown])

    def runs_listing(self, query: RunsQuery, per_page: int) -> dict[str, Any]:
        """One page of the runs, filtered and sorted as asked (runs without the value last, either way), how many
        match, how many there are, and the statuses and commands the filters offer."""
        killed = json.dumps([run["id"] for run in self._running() if _shown_status(run) == KILLED and _text(run["id"])])
        text = query.text.strip().lower()
        chosen = {"killed": killed, "status": query.status, "command": query.command, "text": text}
        [matching] = self._query(_LISTED + "SELECT COUNT(*) AS n FROM listed" + _MATCHING, chosen)
        pages = max(1, math.ceil(matching["n"] / per_page))
        page = min(max(1, query.page), pages)
        key = query.sort if query.sort in SORTABLE else "started_at"
        ordered = _COMPUTED.get(key, key)
        direction = "DESC" if query.descending else "ASC"
        ids = self._query(
            _LISTED + f"SELECT id FROM listed {_MATCHING} ORDER BY ({ordered}) IS NULL, {ordered} {direction},"
            " started_at, id LIMIT :limit OFFSET :offset",
            {**chosen, "limit": per_page, "offset": (page - 1) * per_page},
        )
        shown = json.dumps([row["id"] for row in ids if _text(row["id"])])
        details = self._query(
            _LISTED + f"SELECT listed.*, {_DETAILS} FROM listed WHERE id IN (SELECT value FROM json_each(:shown))",
            {"killed": killed, "shown": shown},
        )
        by_id = {row["id"]: row for row in details}
        return {
            "runs": [by_id[row["id"]] for row in ids if row["id"] in by_id],
            "total": self._query("SELECT COUNT(*) AS n FROM runs")[0]["n"],
            "matching": matching["n"],
            "page": page,
            "pages": pages,
            "statuses": [row["status"] for row in self._query(_LISTED + _STATUSES, {"killed": killed})],
            "commands": [row["command"] for row in self._query("SELECT DISTINCT command FROM runs ORDER BY command")],
        }

    def _running(self) -> list[dict[str, Any]]:
        return self._query("SELECT id, status, pid, host, process, attempts FROM runs WHERE status = 'running'")


def _text(value: Any) -> bool:
    """Whether an id read unchecked is text (it may be a number, a blob, or text that is not UTF-8)."""
    return isinstance(value, str)


def _shown_status(run: dict[str, Any]) -> str:
    """The status a page shows: `killed` when the run's process is gone; as recorded when its pid is malformed."""
    if not isinstance(run["pid"], int | None):
        return str(run["status"])
    try:
        return effective_status(run)
    except (OSError, ValueError, OverflowError):  # a pid no process can have
        return str(run["status"])


def fingerprint(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, default=repr).encode()).hexdigest()[:16]
