"""Opening a store file (for the writer, or read-only under a step budget) and SQLite's errors told plainly."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from selftaught.store.row_checks import decoded_text

#: SQLite steps per byte of a file that one statement on it may take, and the least it may: far above what
#: reading or copying a real run takes, far below forever (an endless recursive view, say).
STEPS_PER_BYTE = 100
MIN_STEPS = 50_000_000
_STEPS_PER_CHECK = 10_000


def describe_sqlite_error(error: Exception) -> str:
    """SQLite's message, with what to do about the two failures users meet: a lock and a damaged file."""
    if isinstance(error, UnicodeDecodeError):
        # Python's sqlite3 decodes SQLite's message as UTF-8: a damaged file's bytes quoted in it break that.
        return "SQLite's message about it is not text (the file is damaged or is not a selftaught store)"
    message = str(error)
    if "locked" in message or "busy" in message:
        return f"{message} (another process holds it; wait for it or stop it)"
    if "not a database" in message or "malformed" in message:
        return f"{message} (the file is damaged or is not a selftaught store)"
    return message


def steps_for(*files: Path) -> int:
    """The steps a statement on these files (a store and its write-ahead log, say) may take; a missing one is empty."""
    size = 0
    for file in files:
        with contextlib.suppress(FileNotFoundError):
            size += file.stat().st_size
    return max(MIN_STEPS, STEPS_PER_BYTE * size)


class StepBudget:
    """A progress handler that stops the statements of its connection once they took `steps` SQLite steps in all.

    `renew` starts a new count (a reader renews it for each statement). A signal that arrives while SQLite
    runs a statement stops it too: its KeyboardInterrupt is kept and `describe` raises it again.
    """

    def __init__(self, steps: int) -> None:
        self.renew(steps)

    def renew(self, steps: int) -> None:
        self.steps = steps
        self._checks_left = steps // _STEPS_PER_CHECK
        self.spent = False
        self.interruption: BaseException | None = None

    def install(self, connection: sqlite3.Connection) -> None:
        connection.set_progress_handler(self._checks().__next__, _STEPS_PER_CHECK)

    def _checks(self) -> Iterator[int]:
        # A generator, not a function: Python runs a pending signal's handler as the generator resumes, inside the
        # `try`, where its exception is kept. Raised in a plain callback, sqlite3 would drop it and the signal be lost.
        while True:
            try:
                while True:
                    self._checks_left -= 1
                    self.spent = self._checks_left < 0
                    yield int(self.spent)  # non-zero interrupts the statement
            except GeneratorExit:
                return
            except BaseException as interruption:  # whatever a signal's handler raised
                self.interruption = interruption
                yield 1

    def describe(self, error: Exception) -> str:
        """Why a statement failed; raises again what a signal raised when a signal stopped it."""
        if self.interruption is not None:
            interruption, self.interruption = self.interruption, None
            raise interruption from None
        if self.spent:
            return f"stopped after {self.steps:,} SQLite steps, far more than a run's file of its size takes"
        return describe_sqlite_error(error)


def connect_for_writing(path: Path, busy_timeout_seconds: float) -> sqlite3.Connection:
    """A connection that commits every statement at once, in WAL mode so that readers never wait for it.

    Creates the file (and its folder) when there is none; raises sqlite3.Error or OSError.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_seconds)
    try:
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error:
        connection.close()
        raise
    return connection


def connect_read_only(path: Path, budget: StepBudget, busy_timeout_seconds: float = 10.0) -> sqlite3.Connection:
    """A connection SQLite itself refuses to write through: safe beside a writer, and on a file of someone else's.

    Its statements run under `budget`; its schema may not call functions (`trusted_schema`), and a text
    value that is not UTF-8 reads as `row_checks.NOT_UTF8`, which the row checks refuse. The file must
    exist (read-only never creates one); raises sqlite3.Error.

    On a store in WAL mode with no write-ahead log beside it (no writer has it open), SQLite creates the
    empty -wal and -shm files a reader needs and leaves them: removing them could pull them from under a
    writer that opened the store meanwhile, and opening the file `immutable` would read torn pages while a
    writer checkpoints. The next writer to close the store removes them.
    """
    # As a URI, so that `mode=ro` applies; as_uri escapes what a path may hold ('?', '#', '%').
    uri = path.absolute().as_uri() + "?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=busy_timeout_seconds)
    connection.row_factory = sqlite3.Row
    connection.text_factory = decoded_text
    budget.install(connection)
    try:
        connection.execute("PRAGMA trusted_schema = OFF")
    except sqlite3.Error:
        connection.close()
        raise
    return connection
