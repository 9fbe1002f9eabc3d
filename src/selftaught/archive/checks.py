"""What `import` checks in an archive's SQLite files before it copies a row of them: someone else made them.

A SQLite file holds more than rows. A view runs its query whenever it is read (an endless recursive
one fills the disk with a sorter's temporary file), a trigger runs when a table is written, and a
column holds a value of any type, whatever its declared one. So an archive's files must have exactly
the schema `export` writes (its tables and indexes: no view, trigger or virtual table), or for a run's
file the schema an earlier selftaught's `export` wrote, which is then upgraded; every row `import`
copies must pass the checks every reader of a store makes (`selftaught.store.row_checks`: the types
its columns declare, UTF-8 text, finite numbers, the JSON shapes the commands rely on); every program
must be the one its hash names; and every statement on an archive's file runs under a budget of
SQLite steps, proportional to the file's size, past which it is stopped.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selftaught.errors import StoreError
from selftaught.store.connection import StepBudget, steps_for
from selftaught.store.migrations import MIGRATIONS_TABLE, apply_migrations
from selftaught.store.row_checks import JSON_SHAPES, decoded_row, decoded_text
from selftaught.store.rows import program_hash
from selftaught.store.schema import MIGRATIONS

#: Tables holding a run's rows, parents first, and their columns naming programs.
RUN_TABLES = ("improver_runs", "evaluations", "lm_calls", "events", "iterations")
_PROGRAM_COLUMNS = {
    "improver_runs": ("improver_hash", "initial_hash", "solution_hash"),
    "evaluations": ("solution_hash",),
    "iterations": ("improver_hash", "candidate_hash"),
}
#: A schema as `sqlite_master` describes it: (type, name, table, sql) of each table and index.
Schema = frozenset[tuple[Any, ...]]
#: What an evaluation keeps of its scorer's problems: `selftaught.tasks.evaluation.MAX_SCORER_PROBLEMS` of them,
#: and the rest counted as one (not imported from there: it loads numpy, which `export` must not).
MAX_SCORER_PROBLEMS_KEPT = 11
_MAX_SCORER_PROBLEM_CHARS = 8192


def _is_kept_scorer_problems(value: object) -> bool:
    # A store's reader takes any number of them; an archive holds no more than selftaught's evaluator keeps.
    return (
        JSON_SHAPES[("evaluations", "scorer_problems")](value)
        and isinstance(value, list)
        and len(value) <= MAX_SCORER_PROBLEMS_KEPT
        and all(len(text) <= _MAX_SCORER_PROBLEM_CHARS for text, _ in value)
    )


_ARCHIVE_SHAPES = {**JSON_SHAPES, ("evaluations", "scorer_problems"): _is_kept_scorer_problems}


@dataclass(frozen=True)
class ArchivedRun:
    """The run's rows that `import` needs beyond copying them, all checked."""

    #: Its `runs` row, JSON columns decoded.
    run: dict[str, Any]
    #: Its language-model calls, JSON columns decoded, as `StoreReader.lm_calls` gives them.
    calls: list[dict[str, Any]]
    #: (hash, kind, source) of the programs its rows name, each the program its hash names.
    programs: list[tuple[str, str, str]]


def budget_for(*files: Path) -> StepBudget:
    return StepBudget(steps_for(*files))


def check_schema(where: str, file: Path, reference: Path) -> None:
    """Refuses a file whose schema is not exactly `reference`'s: `where` names the file in the message."""
    _refuse_other_schema(where, _schema(where, file), _schema(where, reference))


def check_run_schema(where: str, file: Path) -> None:
    """Refuses a run's file unless its schema is one `export` wrote, now or in an earlier selftaught (the schema after
    the first few migrations); upgrades an earlier one, as the store of a run of that selftaught is upgraded."""
    actual = _schema(where, file)
    known = _run_schemas()
    if actual not in known:  # named by how it differs from the nearest known schema, the latest among equals
        _refuse_other_schema(where, actual, min(reversed(known), key=lambda schema: len(schema ^ actual)))
    applied = known.index(actual) + 1
    if applied == len(known):
        return
    # The file's schema is exactly a known one: plain tables and indexes, which run nothing of their own. What its
    # `migrations` table says is the archive maker's, so it is rewritten first from what the schema showed.
    budget = budget_for(file)
    connection = sqlite3.connect(file, isolation_level=None)
    budget.install(connection)
    try:
        connection.execute("PRAGMA trusted_schema = OFF")
        connection.execute("DELETE FROM migrations")
        names = [(name,) for name, _ in MIGRATIONS[:applied]]
        connection.executemany("INSERT INTO migrations VALUES (?, 'as exported')", names)
        apply_migrations(connection)
    except (sqlite3.Error, UnicodeDecodeError) as error:
        raise StoreError(f"{where} cannot be upgraded: {budget.describe(error)}") from None
    finally:
        connection.close()
    if _schema(where, file) != known[-1]:
        raise StoreError(f"{where} cannot be upgraded to this selftaught's schema")


@functools.cache
def _run_schemas() -> list[Schema]:
    """The schema of a run's file after each migration: what `export` wrote in each selftaught, the last one now."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute(MIGRATIONS_TABLE)
        schemas = []
        for _, script in MIGRATIONS:
            connection.executescript(script)
            schemas.append(frozenset(map(tuple, connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))))
        return schemas
    finally:
        connection.close()


def _refuse_other_schema(where: str, actual: Schema, expected: Schema) -> None:
    for kind, name, *_ in sorted(actual - expected, key=_tables_first):
        raise StoreError(f"{where} holds a {kind} {str(name)[:80]!r} unlike any that `export` writes; import takes none")
    for kind, name, *_ in sorted(expected - actual, key=_tables_first):
        raise StoreError(f"{where} lacks the {kind} {name!r} (made by a different selftaught version?)")


def _tables_first(entry: tuple[Any, ...]) -> tuple[bool, str]:
    return entry[0] != "table", repr(entry)  # a table's index differs when the table does: name the table


def _schema(where: str, file: Path) -> Schema:
    budget = budget_for(file)
    connection = _connect(file, budget)
    try:
        return frozenset(tuple(row) for row in connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
    except (sqlite3.Error, UnicodeDecodeError) as error:
        raise StoreError(f"{where} is unreadable: {budget.describe(error)}") from None
    finally:
        connection.close()


def _connect(file: Path, budget: StepBudget) -> sqlite3.Connection:
    connection = sqlite3.connect(file)
    budget.install(connection)
    # Its schema may not call functions: a first line of defence, before its schema is known to be ours.
    connection.execute("PRAGMA trusted_schema = OFF")
    connection.text_factory = decoded_text
    return connection


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
    except (sqlite3.Error, UnicodeDecodeError) as error:
        raise StoreError(f"{where} is unreadable: {budget.describe(error)}") from None
    finally:
        connection.close()
    return ArchivedRun(runs[0], calls, programs)


def _checked_rows(
    where: str, connection: sqlite3.Connection, table: str, key: str, run_id: str
) -> Iterator[dict[str, Any]]:
    """The run's rows of `table`, one at a time, each value checked against its column; JSON columns decoded."""
    cursor = connection.execute(f"SELECT * FROM {table} WHERE {key} = ?", (run_id,))
    names = [column[0] for column in cursor.description]
    for values in cursor:
        row = dict(zip(names, values, strict=True))
        problem = decoded_row(table, row, shapes=_ARCHIVE_SHAPES)
        if problem is not None:
            column, what = problem
            raise StoreError(f"{where}: {column} of run {run_id} {what}")
        yield row


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
