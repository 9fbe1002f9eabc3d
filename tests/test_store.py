"""The run store: named migrations, everything a run paid for recorded, clear errors on a bad file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import STRONG_LPN_SOLUTION, responder_returning
from selftaught import api
from selftaught.api import RunOptions
from selftaught.errors import StoreError
from selftaught.loop.replay import RunRecord
from selftaught.store.reading import StoreReader
from selftaught.store.run_store import RunStore
from selftaught.store.schema import MIGRATIONS
from selftaught.tasks.evaluation import Evaluation


def test_migrations_are_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    RunStore(path).close()
    RunStore(path).close()
    with sqlite3.connect(path) as db:
        names = [row[0] for row in db.execute("SELECT name FROM migrations")]
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert names == [name for name, _ in MIGRATIONS]
    assert mode == "wal"


@pytest.mark.slow
def test_a_run_records_every_request_response_program_and_score(
    scripted_model: Callable[..., str], options_for: Callable[..., RunOptions]
) -> None:
    options = options_for(scripted_model(*responder_returning(STRONG_LPN_SOLUTION)))
    result = api.improve(options)
    with sqlite3.connect(options.store) as db:
        db.row_factory = sqlite3.Row
        run = db.execute("SELECT * FROM runs WHERE id = ?", (result.run_id,)).fetchone()
        calls = db.execute("SELECT * FROM lm_calls WHERE run_id = ?", (result.run_id,)).fetchall()
        improver_run = db.execute("SELECT * FROM improver_runs WHERE run_id = ?", (result.run_id,)).fetchone()
        splits = [
            row[0] for row in db.execute("SELECT split FROM evaluations WHERE run_id = ? ORDER BY id", (result.run_id,))
        ]
        solution = db.execute(
            "SELECT source FROM programs WHERE hash = ?", (improver_run["solution_hash"],)
        ).fetchone()[0]
    assert run["status"] == "finished" and run["command"] == "improve" and json.loads(run["config"])["name"] == "test"
    request = json.loads(calls[0]["request"])
    assert "Improve the following solution" in request["message"] and request["n"] == 2
    assert len(json.loads(calls[0]["responses"])) == 2 and calls[0]["error"] is None
    assert (improver_run["lm_calls"], improver_run["utility_calls"], improver_run["error"]) == (1, 2, None)
    assert solution == STRONG_LPN_SOLUTION.strip()
    # initial solution, the improver's two utility calls, then the result on validation and test
    assert splits == ["validation", "validation", "validation", "validation", "test"]


def test_a_file_that_is_not_a_database_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the run store"):
        RunStore(path)


def test_scorer_errors_are_recorded_and_replayed_and_an_older_store_has_none(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    before = [name for name, _ in MIGRATIONS].index("0008_evaluations_scorer_errors")
    with sqlite3.connect(path) as db:  # a store written before scorer errors were counted apart
        db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        for name, script in MIGRATIONS[:before]:
            db.executescript(f"{script}; INSERT INTO migrations VALUES ('{name}', 'then');")
        db.execute(
            "INSERT INTO runs (id, command, task, model, seed, config, status, started_at)"
            " VALUES ('old', 'run', 't', 'm', 0, '{}', 'failed', 'then')"
        )
        db.execute("INSERT INTO programs VALUES ('h', 'solution', 'def algorithm(): pass')")
        db.execute(
            "INSERT INTO evaluations (run_id, solution_hash, task, split, score, instances, invalid, timeouts,"
            " errors, seconds, created_at) VALUES ('old', 'h', 't', 'validation', 0.5, 4, 1, 0, 0, 1.0, 'then')"
        )
    store = RunStore(path)
    run_id = store.create_run(command="run", task="t", model="m", seed=0, config={}, options={})
    problems = (("ZeroDivisionError: division by zero at t/task.py:3", 2), ("KeyError: 'x' at t/task.py:5", 1))
    evaluation = Evaluation("t", "validation", 0.25, instances=4, scorer_errors=3, scorer_problems=problems)
    store.record_evaluation(run_id, None, "def algorithm(): return 0", evaluation.as_row())
    store.close()
    with StoreReader(path) as reader:
        [old] = RunRecord.load(reader, "old").evaluations.values()
        [new] = RunRecord.load(reader, run_id).evaluations.values()
    assert (old.invalid, old.scorer_errors, old.scorer_problems) == (1, 0, ())
    assert (new.invalid, new.scorer_errors, new.scorer_problems) == (0, 3, problems)  # what a resumed run replays


def test_nothing_recorded_holds_nan_or_an_infinity(tmp_path: Path) -> None:
    """JSON has no word for them (SQLite's JSON functions refuse a record holding one), and a REAL column would keep
    an infinity no reader takes: an event's detail keeps them as their text, anything else is refused."""
    path = tmp_path / "s.sqlite"
    store = RunStore(path)
    run_id = store.create_run(command="run", task="t", model="m", seed=0, config={}, options={})
    store.record_event(run_id, None, "budget_tampering", {"value": float("nan"), "ids": [float("inf"), 1]})
    with pytest.raises(StoreError, match="config"):
        store.create_run(command="run", task="t", model="m", seed=0, config={"x": float("nan")}, options={})
    with pytest.raises(StoreError, match="result"):
        store.finish_run(run_id, "finished", {"best": float("-inf")})
    evaluation = Evaluation("t", "validation", 0.5, instances=1, seconds=float("inf"))
    with pytest.raises(StoreError, match="inf is no number a record keeps"):
        store.record_evaluation(run_id, None, "def algorithm(): pass", evaluation.as_row())
    store.close()
    with sqlite3.connect(path) as db:
        [(detail, valid)] = db.execute("SELECT detail, json_valid(detail) FROM events").fetchall()
    db.close()
    assert valid == 1 and json.loads(detail) == {"value": "nan", "ids": ["inf", 1]}
    with StoreReader(path) as reader:
        assert reader.events(run_id)[0]["detail"]["value"] == "nan"
        assert reader.run(run_id)["status"] == "running" and reader.evaluations(run_id) == []
