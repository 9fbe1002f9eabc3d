"""Bringing a store file's schema up to date: the one place migrations are applied, by the writer or on request.

A reader never migrates (it cannot write): a command that reads a store written by an older
selftaught calls `ensure_current_schema` first, which opens the file for writing only when a
migration is missing. Every missing migration is applied in one transaction, so a reader sees a
store before or after, never half made: a new store holds no table at all until it is whole.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from selftaught.errors import StoreError
from selftaught.store.connection import (
    StepBudget,
    connect_for_writing,
    connect_read_only,
    describe_sqlite_error,
    steps_for,
)
from selftaught.store.row_checks import table_columns
from selftaught.store.rows import now
from selftaught.store.schema import MIGRATIONS

#: How long an upgrade waits for a run that is writing the store.
UPGRADE_BUSY_TIMEOUT_SECONDS = 30.0
#: The table that records which migrations a store has: the first a new store gets.
MIGRATIONS_TABLE = "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"


def store_files(path: Path) -> tuple[Path, Path]:
    """The store and its write-ahead log: what a statement on the store reads."""
    return path, path.with_name(path.name + "-wal")


def missing_migrations(connection: sqlite3.Connection) -> list[str]:
    """The names of the migrations the file lacks, in the order they apply; raises sqlite3.Error when it is no store."""
    applied = {row[0] for row in connection.execute("SELECT name FROM migrations")}
    return [name for name, _ in MIGRATIONS if name not in applied]


def readable_missing_migrations(connection: sqlite3.Connection, path: Path) -> list[str]:
    """The migrations the store at `path` lacks, once its schema shows a selftaught store: StoreError otherwise.

    What a reader reads must be plain tables: a view runs a query of the file's choosing whenever it is
    read (an endless recursive one, say), a virtual table code of its own. Raises sqlite3.Error.
    """
    objects: dict[object, tuple[object, object]] = {}
    for kind, name, sql in connection.execute("SELECT type, name, sql FROM sqlite_master"):
        objects.setdefault(name, (kind, sql))
    if not objects:
        raise StoreError(
            f"the run store {path} holds no table yet: a run may be creating it (try again in a moment),"
            " or it is not a store"
        )
    for name in ("migrations", *table_columns()):
        kind, sql = objects.get(name, ("table", "CREATE TABLE"))
        if kind != "table" or not isinstance(sql, str) or not sql.startswith("CREATE TABLE"):
            shown = "a virtual table" if kind == "table" else f"a {kind}"
            raise StoreError(f"cannot read the run store {path}: its {name} is {shown}, not a table as selftaught writes")
    if "migrations" not in objects:
        raise StoreError(f"cannot read the run store {path}: no such table: migrations (it is not a selftaught store)")
    return missing_migrations(connection)


def apply_migrations(connection: sqlite3.Connection) -> None:
    """Applies every missing migration, each recorded in `migrations`, all in one transaction.

    Two processes upgrading the same store at once take turns: the second finds nothing missing.
    """
    with contextlib.suppress(sqlite3.Error):  # the usual case, checked without taking the write lock
        if not missing_migrations(connection):
            return
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(MIGRATIONS_TABLE)
        missing = set(missing_migrations(connection))
        for name, script in MIGRATIONS:
            if name in missing:
                # One statement at a time: executescript would commit the transaction first. The scripts are
                # selftaught's own, with no ';' inside a literal.
                for statement in filter(str.strip, script.split(";")):
                    connection.execute(statement)
                connection.execute("INSERT INTO migrations VALUES (?, ?)", (name, now()))
        connection.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise


def ensure_current_schema(path: Path) -> None:
    """Upgrades the store at `path` if an older selftaught wrote it; leaves a current store, or no file, untouched.

    The check reads only; the file is opened for writing only when a migration is missing.
    """
    if not path.is_file():
        return  # the reader says there is no store, and nothing is created here
    budget = StepBudget(steps_for(*store_files(path)))
    try:
        connection = connect_read_only(path, budget)
        try:
            missing = readable_missing_migrations(connection, path)
        finally:
            connection.close()
    except (sqlite3.Error, UnicodeDecodeError) as error:
        raise StoreError(f"cannot read the run store {path}: {budget.describe(error)}") from None
    if not missing:
        return
    try:
        connection = connect_for_writing(path, UPGRADE_BUSY_TIMEOUT_SECONDS)
        try:
            apply_migrations(connection)
        finally:
            connection.close()
    except (sqlite3.Error, OSError) as error:
        raise StoreError(f"cannot upgrade the run store {path}: {describe_sqlite_error(error)}") from None
