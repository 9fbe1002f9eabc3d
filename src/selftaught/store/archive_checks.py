"""What `import` checks in an archive's SQLite files before it copies a row of them: someone else made them.

A SQLite file holds more than rows. A view runs its query whenever it is read (an endless recursive
one fills the disk with a sorter's temporary file), a trigger runs when a table is written, and a
column holds a value of any type, whatever its declared one. So an archive's files must have exactly
the schema `export` writes (its tables and indexes: no view, trigger or virtual table); every row
`import` copies must have the types its columns declare, UTF-8 text, finite numbers and the JSON
shapes the commands that read a store rely on; every program must be the one its hash names; and
every statement on an archive's file runs under a budget of SQLite steps, proportional to the file's
size, past which it is stopped.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selftaught.errors import StoreError
from selftaught.store.run_store import describe_sqlite_error, program_hash

#: SQLite steps per byte of an archive's file that the statements on it may take, and the least they may: far
#: above what checking and copying a real run takes, far below forever.
STEPS_PER_BYTE = 100
MIN_STEPS = 50_000_000
_STEPS_PER_CHECK = 10_000

#: Tables holding a run's rows, parents first, and their columns naming programs.
RUN_TABLES = ("improver_runs", "evaluations", "lm_calls", "events", "iterations")
_PROGRAM_COLUMNS = {
    "improver_runs": ("improver_hash", "initial_hash", "solution_hash"),
    "evaluations": ("solution_hash",),
    "iterations": ("improver_hash", "candidate_hash"),
}
#: What an evaluation keeps of its scorer's problems: `selftaught.tasks.evaluation.MAX_SCORER_PROBLEMS` of them,
#: and the rest counted as one (not imported from there: it loads numpy, which `export` must not).
MAX_SCORER_PROBLEMS_KEPT = 11
_MAX_SCORER_PROBLEM_CHARS = 8192
_TYPES: dict[str, tuple[type, ...]] = {"TEXT": (str,), "INTEGER": (int,), "REAL": (float, int)}
_TYPE_NAMES = {"TEXT": "text", "INTEGER": "a whole number", "REAL": "a number"}
_VALUE_NAMES = {str: "text", int: "a whole number", float: "a number", bytes: "a blob"}


class _NotUtf8:
    """What a text value that is not UTF-8 reads as: the readers of a store would fail on it."""


_NOT_UTF8 = _NotUtf8()


def _is_object(value: object) -> bool:
    return isinstance(value, dict)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_list_of(check: Callable[[Any], bool]) -> Callable[[object], bool]:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def _is_violation(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(item, str) for item in (*value, *value.values()))


def _is_scorer_problems(value: object) -> bool:
    return isinstance(value, list) and len(value) <= MAX_SCORER_PROBLEMS_KEPT and all(map(_is_scorer_problem, value))


def _is_scorer_problem(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and len(value[0]) <= _MAX_SCORER_PROBLEM_CHARS
        and _is_count(value[1])
    )


def _is_request(value: object) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("system"), str)
        and isinstance(value.get("message"), str)
        and _is_count(value.get("n"))
        and _is_number(value.get("temperature"))
        and _is_count(value.get("max_tokens"))
        and (value.get("seed") is None or _is_count(value.get("seed")))
    )


def _is_event_detail(value: object) -> bool:
    # The ids of improver runs an event names are shifted as the rows' own are: they must be numbers.
    return isinstance(value, dict) and _is_list_of(_is_count)(value.get("improver_run_ids", []))


#: The JSON columns, and what their value must be (None stays None where the column may be empty).
JSON_SHAPES: dict[tuple[str, str], Callable[[object], bool]] = {
    ("runs", "config"): _is_object,
    ("runs", "options"): _is_object,
    ("runs", "result"): _is_object,
    ("evaluations", "violations"): _is_list_of(_is_violation),
    ("evaluations", "scorer_problems"): _is_scorer_problems,
    ("lm_calls", "request"): _is_request,
    ("lm_calls", "responses"): _is_list_of(lambda item: isinstance(item, str)),
    ("events", "detail"): _is_event_detail,
}


@dataclass(frozen=True)
class ArchivedRun:
    """The run's rows that `import` needs beyond copying them, all checked."""

    #: Its `runs` row, JSON columns decoded.
    run: dict[str, Any]
    #: Its language-model calls, JSON columns decoded, as `StoreReader.lm_calls` gives them.
    calls: list[dict[str, Any]]
    #: (hash, kind, source) of the programs its rows name, each the program its hash names.
    programs: list[tuple[str, str, str]]


class StepBudget:
    """A progress handler that stops every statement of its connection once they took `steps` steps in all."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self._checks_left = steps // _STEPS_PER_CHECK
        self.spent = False

    def install(self, connection: sqlite3.Connection) -> None:
        connection.set_progress_handler(self._check, _STEPS_PER_CHECK)

    def _check(self) -> int:
        self._checks_left -= 1
        self.spent = self._checks_left < 0
        return int(self.spent)  # non-zero interrupts the statement

    def describe(self, error: sqlite3.Error) -> str:
        if self.spent:
            return f"stopped after {self.steps:,} SQLite steps, far more than a run's file of its size takes"
        return describe_sqlite_error(error)


def budget_for(*files: Path) -> StepBudget:
    return StepBudget(max(MIN_STEPS, STEPS_PER_BYTE * sum(file.stat().st_size for file in files)))


def check_schema(where: str, file: Path, reference: Path) -> None:
    """Refuses a file whose schema is not exactly `reference`'s: `where` names the file in the message."""
    actual, expected = _schema(where, file), _schema(where, reference)
    for kind, name, *_ in sorted(actual - expected, key=_tables_first):
        raise StoreError(f"{where} holds a {kind} {name[:80]!r} unlike any that `export` writes; import takes none")
    for kind, name, *_ in sorted(expected - actual, key=_tables_first):
        raise StoreError(f"{where} lacks the {kind} {name!r} (made by a different selftaught version?)")


def _tables_first(entry: tuple[Any, ...]) -> tuple[bool, str]:
    return entry[0] != "table", repr(entry)  # a table's index differs when the table does: name the table


def _schema(where: str, file: Path) -> set[tuple[Any, ...]]:
    budget = budget_for(file)
    connection = _connect(file, budget)
    try:
        return {tuple(row) for row in connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")}
    except sqlite3.Error as error:
        raise StoreError(f"{where} is unreadable: {budget.describe(error)}") from None
    finally:
        connection.close()


def _connect(file: Path, budget: StepBudget) -> sqlite3.Connection:
    connection = sqlite3.connect(file)
    budget.install(connection)
    # Its schema may not call functions: a first line of defence, before its schema is known to be ours.
    connection.execute("PRAGMA trusted_schema = OFF")
    connection.text_factory = _text
    return connection


def _text(data: bytes) -> str | _NotUtf8:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return _NOT_UTF8


def read_archived_run(where: str, file: Path, run_id: str) -> ArchivedRun:
    """Checks every row of `run_id` in `file` (whose schema `check_schema` accepted); what `import` needs of them."""
    budget = budget_for(file)
    connection = _connect(file, budget)
    try:
        runs = list(_checked_rows(where, connection, "runs", "id", run_id))
        if len(runs) != 1:
            raise StoreError(f"{where} holds no run {run_id}")
        calls: list[dict[str, Any]] = []
        hashes = {(runs[0]["options"] or {}).get("initial_improver_hash")}
        for table in RUN_TABLES:
            for row in _checked_rows(where, connection, table, "run_id", run_id):
                hashes.update(row[column] for column in _PROGRAM_COLUMNS.get(table, ()))
                if table == "lm_calls":
                    calls.append(row)
        programs = _checked_programs(where, connection, {value for value in hashes if isinstance(value, str)})
    except sqlite3.Error as error:
        raise StoreError(f"{where} is unreadable: {budget.describe(error)}") from None
    finally:
        connection.close()
    return ArchivedRun(runs[0], calls, programs)


def _checked_rows(
    where: str, connection: sqlite3.Connection, table: str, key: str, run_id: str
) -> Iterator[dict[str, Any]]:
    """The run's rows of `table`, one at a time, each value checked against its column; JSON columns decoded."""
    declared = {
        name: (kind, bool(not_null))
        for _, name, kind, not_null, *_ in connection.execute(f"PRAGMA table_info({table})")
    }
    cursor = connection.execute(f"SELECT * FROM {table} WHERE {key} = ?", (run_id,))
    names = [column[0] for column in cursor.description]
    for values in cursor:
        row = dict(zip(names, values, strict=True))
        for name, value in row.items():
            problem = _value_problem(value, *declared[name])
            shape = JSON_SHAPES.get((table, name))
            if problem is None and shape is not None and value is not None:
                row[name], problem = _decoded(value, shape)
            if problem is not None:
                raise StoreError(f"{where}: {table}.{name} of run {run_id} {problem}")
        yield row


def _value_problem(value: object, declared: str, not_null: bool) -> str | None:
    if value is None:
        return "is empty" if not_null else None
    if value is _NOT_UTF8:
        return "is not UTF-8 text"
    if not isinstance(value, _TYPES[declared]):
        return f"holds {_VALUE_NAMES.get(type(value), 'another value')} where {_TYPE_NAMES[declared]} belongs"
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    return None


def _decoded(value: str, shape: Callable[[object], bool]) -> tuple[object, str | None]:
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):
        return None, "is not JSON"
    return decoded, None if shape(decoded) else "is not the JSON selftaught records there"


def _checked_programs(where: str, connection: sqlite3.Connection, hashes: set[str]) -> list[tuple[str, str, str]]:
    """The programs with these hashes; each must be the program its hash names, which is all a store knows it by."""
    programs = []
    for digest in sorted(hashes):
        row = connection.execute("SELECT hash, kind, source FROM programs WHERE hash = ?", (digest,)).fetchone()
        if row is None:
            continue  # a reader says which program is missing, if one ever needs it
        if not (isinstance(row[1], str) and isinstance(row[2], str) and program_hash(row[2]) == digest):
            raise StoreError(f"{where}: the program {digest[:12]} is not the one its hash names")
        programs.append((digest, row[1], row[2]))
    return programs
