"""A store file is read as someone else's: a damaged or hostile one gives one StoreError, never a traceback or a hang.

Every row the reader reads is checked (types, UTF-8, finite numbers, JSON shapes), what it reads must be
plain tables, and every statement runs under a budget of SQLite steps that a signal cuts short too.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from selftaught.cli.main import cli
from selftaught.errors import StoreError
from selftaught.store import connection as store_connection
from selftaught.store import migrations
from selftaught.store.connection import StepBudget
from selftaught.store.migrations import ensure_current_schema
from selftaught.store.processes import process_alive, process_identity
from selftaught.store.reading import KILLED, StoreReader
from selftaught.store.rows import CallRow, EvaluationRow
from selftaught.store.run_store import RunStore
from selftaught.store.schema import MIGRATIONS

IMPROVER = "def improve_algorithm(initial_solution, utility, language_model):\n    return initial_solution\n"
SOLUTION = "def algorithm(a):\n    return 1\n"
ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"


def recorded_store(folder: Path) -> tuple[Path, str]:
    """A store with one run holding a row of every kind (two priced calls among them), closed."""
    store = RunStore(folder / "runs.sqlite")
    run_id = store.create_run(
        command="run", task="parity_noise", model="scripted:m", seed=0, config={"name": "test"}, options={"task": "t"}
    )
    improver_run = store.start_improver_run(
        run_id, purpose="self-improvement", improver=IMPROVER, initial_solution=IMPROVER, parent_id=None
    )
    evaluation = EvaluationRow(
        task="parity_noise", split="validation", score=0.5, instances=4, invalid=0, timeouts=0, errors=0,
        scorer_errors=0, scorer_problems=(), problem=None, failure=None, seconds=1.0,
        violations=({"kind": "network", "detail": "x"},), replayed=False,
    )  # fmt: skip
    store.record_evaluation(run_id, improver_run, SOLUTION, evaluation)
    for _ in range(2):
        call = CallRow(
            backend="scripted", system="s", message="m", n=1, temperature=0.7, max_tokens=64, seed=1,
            responses=("r",), prompt_tokens=1, completion_tokens=1, latency_seconds=0.1, error=None,
            cache_hit=False, cost_usd=0.5, replayed=False,
        )  # fmt: skip
        store.record_lm_call(run_id, improver_run, call)
    store.record_event(run_id, improver_run, "speculation_asked", {"improver_run_ids": [improver_run]})
    improver_hash = store.save_program(IMPROVER, "improver")
    store.record_iteration(
        run_id,
        {"iteration": 0, "improver_hash": improver_hash, "meta_utility_val": 0.5, "meta_utility_test": 0.5,
         "accepted": True},
    )  # fmt: skip
    store.finish_run(run_id, "finished", {"best": 0.5})
    store.close()
    return folder / "runs.sqlite", run_id


def damaged(path: Path, *statements: str) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    for statement in statements:
        connection.executescript(statement)
    connection.close()


def read_everything(reader: StoreReader, run_id: str) -> None:
    """Every query of the reader, as the commands and the dashboard make them."""
    reader.runs()
    reader.run(run_id)
    for query in (reader.counts, reader.best_solution, reader.iterations, reader.improver_runs, reader.evaluations,
                  reader.lm_calls, reader.events, reader.final_improver, reader.progress, reader.lm_call_timeline,
                  reader.returned_solution_scores):  # fmt: skip
        query(run_id)
    reader.lm_call_page(run_id, 0, 10)
    ids = [row["id"] for row in reader.improver_runs(run_id)]
    reader.improver_run_evaluations(run_id, ids)
    reader.improver_run_events(run_id, ids)
    reader.programs({row["solution_hash"] for row in reader.evaluations(run_id)})


#: A change to a recorded store, and the column the reader's error must name.
MALFORMED = {
    "options_not_json": ("UPDATE runs SET options = 'not json'", "runs.options"),
    "options_task_not_text": ("UPDATE runs SET options = json_set(options, '$.task', 5)", "runs.options"),
    "config_nan": ("UPDATE runs SET config = '{\"x\": NaN}'", "runs.config"),
    "config_huge_number": ("UPDATE runs SET config = '{\"x\": 1e999}'", "runs.config"),
    "result_a_list": ("UPDATE runs SET result = '[1, 2]'", "runs.result"),
    "pid_text": ("UPDATE runs SET status = 'running', pid = 'abc'", "runs.pid"),
    "seed_text": ("UPDATE runs SET seed = 'zero'", "runs.seed"),
    "model_not_utf8": ("UPDATE runs SET model = CAST(X'FF' AS TEXT)", "runs.model"),
    "started_at_blob": ("UPDATE runs SET started_at = X'00'", "runs.started_at"),
    "request_without_n": ("UPDATE lm_calls SET request = '{}'", "lm_calls.request"),
    "responses_null": ("UPDATE lm_calls SET responses = 'null'", "lm_calls.responses"),
    "cost_text": ("UPDATE lm_calls SET cost_usd = 'lots'", "lm_calls.cost_usd"),
    "costs_summing_past_a_float": ("UPDATE lm_calls SET cost_usd = 1e308", "cost_usd"),
    "violations_not_json": ("UPDATE evaluations SET violations = 'x'", "evaluations.violations"),
    "scorer_problems_object": ("UPDATE evaluations SET scorer_problems = '{\"a\": 1}'", "evaluations.scorer_problems"),
    "score_text": ("UPDATE evaluations SET score = 'NaN'", "evaluations.score"),
    "score_infinite": ("UPDATE evaluations SET score = 1e999", "evaluations.score"),
    "event_detail_list": ("UPDATE events SET detail = '[1]'", "events.detail"),
    "meta_utility_text": ("UPDATE iterations SET meta_utility_val = 'high'", "_val"),  # the runs' best_val first
    "seconds_text": ("UPDATE improver_runs SET seconds = 'long'", "improver_runs.seconds"),
    "program_blob": ("UPDATE programs SET source = X'00'", "programs.source"),
}


@pytest.mark.parametrize("malformed", sorted(MALFORMED))
def test_a_malformed_row_is_a_store_error_naming_its_column(malformed: str, tmp_path: Path) -> None:
    path, run_id = recorded_store(tmp_path)
    change, column = MALFORMED[malformed]
    damaged(path, change)
    with StoreReader(path) as reader, pytest.raises(StoreError, match=rf"malformed record: \S*{column} of "):
        read_everything(reader, run_id)


@pytest.mark.parametrize(
    "arguments",
    [["runs"], ["runs", "--json"], ["show"], ["show", "--json"], ["show", "--best"], ["audit"], ["export"]],
    ids=" ".join,
)
def test_every_command_that_reads_says_so_in_one_line(arguments: list[str], tmp_path: Path) -> None:
    path, run_id = recorded_store(tmp_path)
    damaged(path, "UPDATE runs SET options = 'not json'")
    run = [] if arguments[0] == "runs" else [run_id]
    output = ["-o", str(tmp_path / "x.tar.gz")] if arguments == ["export"] else []
    result = CliRunner().invoke(cli, [arguments[0], *run, *arguments[1:], *output, "--store", str(path)])
    assert result.exit_code == 2 and result.stdout == "", result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and "runs.options of run" in line and "not JSON" in line


ENDLESS_VIEWS = {
    "runs": f"ALTER TABLE runs RENAME TO kept; CREATE VIEW runs AS {ENDLESS} SELECT kept.* FROM kept, c WHERE c.x < 0",
    "migrations": (
        "ALTER TABLE migrations RENAME TO kept; CREATE VIEW migrations AS SELECT name, applied_at FROM kept"
        f" WHERE ({ENDLESS} SELECT count(*) FROM c) > 0"
    ),
}


@pytest.mark.parametrize("table", sorted(ENDLESS_VIEWS))
def test_a_table_replaced_by_an_endless_view_is_refused_unread(table: str, tmp_path: Path) -> None:
    path, _ = recorded_store(tmp_path)
    damaged(path, ENDLESS_VIEWS[table])
    started = time.monotonic()
    for opening in (StoreReader, ensure_current_schema):
        with pytest.raises(StoreError, match=f"its {table} is a view, not a table"):
            opening(path)
    assert time.monotonic() - started < 5


def test_a_virtual_table_is_refused_unread(tmp_path: Path) -> None:
    path, _ = recorded_store(tmp_path)
    try:
        damaged(path, "ALTER TABLE events RENAME TO kept; CREATE VIRTUAL TABLE events USING fts5(detail)")
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no fts5")
    with pytest.raises(StoreError, match="its events is a virtual table"):
        StoreReader(path)


def test_every_statement_stops_at_its_step_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, run_id = recorded_store(tmp_path)
    monkeypatch.setattr(store_connection, "_STEPS_PER_CHECK", 1)
    with StoreReader(path) as reader:
        monkeypatch.setattr(store_connection, "MIN_STEPS", 100)
        monkeypatch.setattr(store_connection, "STEPS_PER_BYTE", 0)
        with pytest.raises(StoreError, match="stopped after 100 SQLite steps"):
            reader.runs()
        monkeypatch.setattr(store_connection, "MIN_STEPS", 10_000_000)
        assert reader.run(run_id)["id"] == run_id  # each statement has a budget of its own


@pytest.fixture
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raising as the CLI makes it (`selftaught.stop_signals`), for the length of a test."""
    from selftaught.stop_signals import StopSignal

    def stop(number: int, frame: object) -> None:
        raise StopSignal(number)

    previous = signal.signal(signal.SIGTERM, stop)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_statement_and_is_raised_again(stop: signal.Signals, sigterm_raises: None) -> None:
    budget = StepBudget(10**15)  # no budget would stop it in a lifetime
    connection = sqlite3.connect(":memory:")
    budget.install(connection)
    threading.Timer(0.3, os.kill, (os.getpid(), stop)).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt) as raised:
        try:
            connection.execute(f"{ENDLESS} SELECT count(*) FROM c").fetchall()
        except sqlite3.Error as error:
            budget.describe(error)
    assert time.monotonic() - started < 5
    assert getattr(raised.value, "signal_number", signal.SIGINT) == stop
    connection.close()


def test_a_damaged_file_whose_error_message_is_not_text_is_a_store_error(tmp_path: Path) -> None:
    path, _ = recorded_store(tmp_path)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA writable_schema = ON")
    # SQLite quotes the damaged bytes in its message, which Python's sqlite3 fails to decode.
    connection.execute("UPDATE sqlite_master SET sql = sql || ' ' || CAST(X'FFFE' AS TEXT) WHERE name = 'events'")
    connection.commit()
    connection.close()
    for opening in (StoreReader, ensure_current_schema):
        with pytest.raises(StoreError, match="damaged"):
            opening(path)


@pytest.mark.parametrize("made", ["empty", "wal_only"])
def test_a_store_without_tables_is_said_to_be_in_the_making(made: str, tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    path.touch()
    if made == "wal_only":  # what a writer leaves the moment it has opened the file
        damaged(path, "PRAGMA journal_mode = WAL")
    for opening in (StoreReader, ensure_current_schema):
        with pytest.raises(StoreError, match="holds no table yet: a run may be creating it"):
            opening(path)


def test_a_new_store_is_made_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All migrations in one transaction: a reader never sees a store half made, which it would call outdated."""
    monkeypatch.setattr(migrations, "MIGRATIONS", (*MIGRATIONS, ("9999_failing", "CREATE TABLE runs (x)")))
    path = tmp_path / "runs.sqlite"
    with pytest.raises(StoreError, match="already exists"):
        RunStore(path)
    monkeypatch.undo()
    with pytest.raises(StoreError, match="holds no table yet"):
        StoreReader(path)
    RunStore(path).close()
    StoreReader(path).close()


@pytest.mark.parametrize("pid", [-1, 0, 2**31, 2**63 - 1])
def test_a_recorded_pid_no_process_can_have_is_a_killed_run(pid: int, tmp_path: Path) -> None:
    assert not process_alive(pid) and process_identity(pid) is None
    path, run_id = recorded_store(tmp_path)
    damaged(path, f"UPDATE runs SET status = 'running', pid = {pid}, host = '{socket.gethostname()}'")
    with StoreReader(path) as reader:
        assert reader.run(run_id)["status"] == KILLED
