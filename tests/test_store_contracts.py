"""The store's two contracts, checked on a real file: what a `Recorder` writes, a `Reader` reads back as written.

The checks of the contracts run over IMPLEMENTATIONS: another recorder or reader (a server's, a
dashboard's) joins the list and passes the same checks. The checks after them are the SQLite
implementation's own promises: its reader cannot write, leaves the file as it found it, and refuses
a store an older selftaught wrote until `ensure_current_schema` upgrades it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from selftaught.cli.main import cli
from selftaught.errors import StoreError
from selftaught.store.contracts import Reader, Recorder
from selftaught.store.migrations import ensure_current_schema
from selftaught.store.reading import StoreReader
from selftaught.store.rows import CallRow, EvaluationRow
from selftaught.store.run_store import RunStore
from selftaught.store.schema import MIGRATIONS


@dataclass(frozen=True)
class Implementation:
    """A recorder and a reader of the same store, each made from where the store is."""

    name: str
    recorder: Callable[[Path], Recorder]
    reader: Callable[[Path], Reader]


IMPLEMENTATIONS = [Implementation("sqlite", RunStore, StoreReader)]

IMPROVER = "def improve_algorithm(initial_solution, utility, language_model):\n    return initial_solution\n"
BETTER_IMPROVER = IMPROVER.replace("return initial_solution", "return initial_solution  # better")
SEED = "def algorithm(a, b, c):\n    return 0\n"
SOLUTION = "def algorithm(a, b, c):\n    return 1\n"
CONFIG = {"name": "test", "budgets": {"iterations": 2, "temperature": 0.7}, "note": None, "tags": ["é", "\u202e"]}
OPTIONS = {"task": "parity_noise", "workers": 2, "max_cost_usd": None, "nested": {"list": [1, 2.5, None]}}


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda implementation: implementation.name)
def implementation(request: pytest.FixtureRequest) -> Implementation:
    chosen: Implementation = request.param
    return chosen


@pytest.fixture
def recorder(implementation: Implementation, tmp_path: Path) -> Iterator[Recorder]:
    opened = implementation.recorder(tmp_path / "runs.sqlite")
    yield opened
    opened.close()


def open_reader(implementation: Implementation, recorder: Recorder) -> Reader:
    return implementation.reader(recorder.path)


def record_a_whole_run(recorder: Recorder) -> dict[str, Any]:
    """Writes every kind of row of one run, and returns what was written, by kind."""
    run_id = recorder.create_run(
        command="run", task="parity_noise", model="scripted:m", seed=7, config=CONFIG, options=OPTIONS
    )
    seed_hash = recorder.save_program(SEED, "solution")
    first = recorder.start_improver_run(
        run_id, purpose="self-improvement", improver=IMPROVER, initial_solution=IMPROVER, parent_id=None
    )
    second = recorder.start_improver_run(
        run_id, purpose="meta-utility", improver=BETTER_IMPROVER, initial_solution=SEED, parent_id=first
    )
    evaluation = EvaluationRow(
        task="parity_noise", split="validation", score=0.625, instances=8, invalid=1, timeouts=2, errors=0,
        scorer_errors=3, scorer_problems=(("ZeroDivisionError: division by zero at t/task.py:3", 3),),
        problem=None, failure="killed: took too long", seconds=1.5, violations=({"kind": "network", "detail": "x"},),
        replayed=True,
    )  # fmt: skip
    recorder.record_evaluation(run_id, second, SOLUTION, evaluation)
    test_evaluation = EvaluationRow(
        task="parity_noise", split="test", score=0.5, instances=4, invalid=0, timeouts=0, errors=0, scorer_errors=0,
        scorer_problems=(), problem="instance 2: wrong shape", failure=None, seconds=0.25, violations=(),
        replayed=False,
    )  # fmt: skip
    recorder.record_evaluation(run_id, None, SOLUTION, test_evaluation)
    calls = [
        CallRow(
            backend="scripted", system="sys", message="improve\nthis", n=2, temperature=0.7, max_tokens=512,
            seed=None, responses=("one", "two"), prompt_tokens=10, completion_tokens=20, latency_seconds=0.5,
            error=None, cache_hit=False, cost_usd=0.25, replayed=False,
        ),
        CallRow(
            backend="scripted", system="sys", message="again", n=3, temperature=1.0, max_tokens=512, seed=4,
            responses=("only one",), prompt_tokens=5, completion_tokens=1, latency_seconds=0.125,
            error="BackendError: 1 of 3 answered", cache_hit=True, cost_usd=None, replayed=False,
        ),
        CallRow(
            backend="scripted", system="sys", message="replayed", n=1, temperature=0.0, max_tokens=64, seed=1,
            responses=("r",), prompt_tokens=1, completion_tokens=1, latency_seconds=0.0, error=None,
            cache_hit=False, cost_usd=1.0, replayed=True,
        ),
    ]  # fmt: skip
    for call in calls:
        recorder.record_lm_call(run_id, second, call)
    detail = {"improver_run_ids": [first, second], "where": Path("/tmp/x"), "ratio": 0.5, "none": None}
    recorder.record_event(run_id, second, "speculation_asked", detail)
    recorder.record_event(run_id, None, "sandbox_violation", {"kind": "network"})
    recorder.finish_improver_run(
        second, solution=SOLUTION, solution_kind="solution", error=None, lm_calls=3, lm_responses=4,
        utility_calls=1, seconds=2.75,
    )  # fmt: skip
    recorder.finish_improver_run(
        first, solution=None, solution_kind="improver", error="no improvement", lm_calls=0, lm_responses=0,
        utility_calls=0, seconds=0.5,
    )  # fmt: skip
    improver_hash = recorder.save_program(IMPROVER, "improver")
    better_hash = recorder.save_program(BETTER_IMPROVER, "improver")
    iterations = [
        {"iteration": 0, "improver_hash": improver_hash, "meta_utility_val": 0.5, "meta_utility_test": 0.25,
         "accepted": True},
        {"iteration": 1, "improver_hash": better_hash, "meta_utility_val": 0.75, "meta_utility_test": 0.5,
         "candidate_hash": better_hash, "candidate_val": 0.75, "candidate_test": 0.5, "accepted": True,
         "error": None, "improver_run_id": first, "spent_usd": 0.25},
    ]  # fmt: skip
    for row in iterations:
        recorder.record_iteration(run_id, row)
    result = {"best": 0.75, "cost_usd": 0.25, "history": [0.5, 0.75], "note": None}
    recorder.finish_run(run_id, "finished", result)
    return {
        "run_id": run_id, "seed_hash": seed_hash, "improver_runs": (first, second), "calls": calls,
        "evaluations": (evaluation, test_evaluation), "detail": detail, "iterations": iterations, "result": result,
    }  # fmt: skip


def test_each_implementation_has_every_method_of_its_contract_with_its_parameters(
    implementation: Implementation, recorder: Recorder
) -> None:
    reader = open_reader(implementation, recorder)
    try:
        for contract, made in ((Recorder, recorder), (Reader, reader)):
            for name, declared in vars(contract).items():
                if name.startswith("_") or not inspect.isfunction(declared):
                    continue
                own = getattr(made, name, None)
                assert callable(own), f"{implementation.name}: {type(made).__name__} has no {name}"
                expected = list(inspect.signature(declared).parameters.values())[1:]  # without self
                actual = list(inspect.signature(own).parameters.values())
                assert [(p.name, p.kind) for p in actual] == [(p.name, p.kind) for p in expected], (made, name)
        assert isinstance(recorder.path, Path)
    finally:
        reader.close()


def test_every_kind_of_row_reads_back_as_it_was_written(implementation: Implementation, recorder: Recorder) -> None:
    written = record_a_whole_run(recorder)
    run_id, (first, second) = written["run_id"], written["improver_runs"]
    reader = open_reader(implementation, recorder)
    try:
        run = reader.run(run_id)
        assert (run["command"], run["task"], run["model"], run["seed"]) == ("run", "parity_noise", "scripted:m", 7)
        assert (run["config"], run["options"], run["result"]) == (CONFIG, OPTIONS, written["result"])
        assert run["status"] == "finished" and isinstance(run["started_at"], str) and run["finished_at"]
        assert reader.find_run(run_id[:-2]) == run and reader.has_run(run_id) and not reader.has_run(run_id[:-2])
        [listed] = reader.runs()
        assert listed["id"] == run_id and listed["iteration_rows"] == 2 and listed["best_val"] == 0.75
        assert listed["cost_usd"] == 0.25  # the replayed call was paid once, before; an unpriced one adds nothing
        check_improver_runs(reader, run_id, first, second)
        check_evaluations(reader, run_id, second, written["evaluations"])
        check_calls(reader, run_id, second, written["calls"])
        assert [(e["kind"], e["improver_run_id"], e["detail"]) for e in reader.events(run_id)] == [
            ("speculation_asked", second, {**written["detail"], "where": "/tmp/x"}),  # what JSON cannot hold: text
            ("sandbox_violation", None, {"kind": "network"}),
        ]
        check_iterations(reader, run_id, written["iterations"])
        assert reader.counts(run_id) == {
            "lm_calls": 3, "live_lm_calls": 1, "replayed_lm_calls": 1, "lm_responses": 3, "cost_usd": 0.25,
            "evaluations": 2,
        }  # fmt: skip
        best = reader.best_solution(run_id)
        assert best is not None and (best["source"], best["utility_val"], best["utility_test"]) == (
            SOLUTION,
            0.625,
            0.5,
        )
        assert best["improver_run_id"] == second
        assert reader.final_improver(run_id[:-2]) == BETTER_IMPROVER and reader.final_improver("nope") is None
        assert reader.program(written["seed_hash"]) == SEED
    finally:
        reader.close()


def check_improver_runs(reader: Reader, run_id: str, first: int, second: int) -> None:
    rows = {row["id"]: row for row in reader.improver_runs(run_id)}
    assert list(rows) == [first, second]
    assert (rows[first]["purpose"], rows[first]["parent_id"], rows[first]["error"]) == (
        "self-improvement", None, "no improvement"
    )  # fmt: skip
    assert reader.program(rows[first]["improver_hash"]) == IMPROVER
    assert reader.program(rows[first]["initial_hash"]) == IMPROVER and rows[first]["solution_hash"] is None
    assert (rows[second]["parent_id"], rows[second]["lm_calls"], rows[second]["lm_responses"]) == (first, 3, 4)
    assert rows[second]["utility_calls"] == 1 and rows[second]["seconds"] == 2.75
    assert isinstance(rows[second]["seconds"], float) and rows[second]["finished_at"]
    sources = {rows[second][column]: source for column, source in (("initial_hash", SEED), ("solution_hash", SOLUTION))}
    programs = reader.programs({*sources, "0" * 64})
    assert {digest: row["source"] for digest, row in programs.items()} == sources  # an unknown hash is left out
    assert programs[rows[second]["solution_hash"]]["kind"] == "solution"
    with pytest.raises(StoreError, match="missing"):
        reader.program("0" * 64)


def check_evaluations(reader: Reader, run_id: str, second: int, written: tuple[EvaluationRow, ...]) -> None:
    rows = reader.evaluations(run_id)
    assert [row["improver_run_id"] for row in rows] == [second, None]
    for row, evaluation in zip(rows, written, strict=True):
        assert reader.program(row["solution_hash"]) == SOLUTION
        assert {name: row[name] for name in vars(evaluation)} == {
            **vars(evaluation),
            "violations": list(evaluation.violations),
            "scorer_problems": list(evaluation.scorer_problems),
            "replayed": int(evaluation.replayed),
        }
        assert isinstance(row["score"], float) and isinstance(row["seconds"], float)
        assert all(isinstance(problem, tuple) for problem in row["scorer_problems"])


def check_calls(reader: Reader, run_id: str, second: int, written: list[CallRow]) -> None:
    rows = reader.lm_calls(run_id)
    for row, call in zip(rows, written, strict=True):
        assert row["improver_run_id"] == second and row["request"] == call.request()
        assert row["responses"] == list(call.responses) and row["backend"] == call.backend
        kept = ("prompt_tokens", "completion_tokens", "latency_seconds", "error", "cost_usd")
        assert {name: row[name] for name in kept} == {name: getattr(call, name) for name in kept}
        assert (row["cache_hit"], row["replayed"]) == (int(call.cache_hit), int(call.replayed))
        assert isinstance(row["latency_seconds"], float)
    assert [StoreReader.answered_in_full(row) for row in rows] == [True, False, True]


def check_iterations(reader: Reader, run_id: str, written: list[dict[str, Any]]) -> None:
    defaults = {"candidate_hash": None, "candidate_val": None, "candidate_test": None, "error": None}
    defaults |= {"improver_run_id": None, "spent_usd": None}
    expected = [{"run_id": run_id, **defaults, **row, "accepted": int(row["accepted"])} for row in written]
    assert reader.iterations(run_id) == expected


def test_a_run_is_found_by_a_unique_prefix_and_never_by_a_guess(
    implementation: Implementation, recorder: Recorder
) -> None:
    ids = [recorder.create_run(command="run", task="t", model="m", seed=0, config={}, options={}) for _ in range(2)]
    reader = open_reader(implementation, recorder)
    try:
        assert reader.find_run("no-such-run") is None
        with pytest.raises(StoreError, match="no run 'no-such-run'"):
            reader.run("no-such-run")
        with pytest.raises(StoreError, match="ambiguous"):
            reader.find_run(ids[0][:4])  # both ids start with this year
        assert reader.find_run("_") is None and reader.find_run("%") is None  # LIKE's wildcards are literal
        assert [run["status"] for run in reader.runs()] == ["running", "running"]  # this very process runs them
    finally:
        reader.close()


def test_a_reader_beside_a_live_writer_sees_each_committed_row(
    implementation: Implementation, recorder: Recorder
) -> None:
    run_id = recorder.create_run(command="run", task="t", model="m", seed=0, config={}, options={})
    reader = open_reader(implementation, recorder)
    try:
        assert reader.events(run_id) == []
        for index in range(3):
            recorder.record_event(run_id, None, "tick", {"index": index})
            assert [event["detail"]["index"] for event in reader.events(run_id)] == list(range(index + 1))
        recorder.finish_run(run_id, "finished", None)
        assert reader.run(run_id)["status"] == "finished" and reader.run(run_id)["result"] is None
    finally:
        reader.close()


def test_a_recorder_shared_between_threads_loses_no_row(implementation: Implementation, recorder: Recorder) -> None:
    run_id = recorder.create_run(command="run", task="t", model="m", seed=0, config={}, options={})

    def record(thread: int) -> None:
        for index in range(25):
            recorder.record_event(run_id, None, "tick", {"thread": thread, "index": index})

    threads = [threading.Thread(target=record, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader = open_reader(implementation, recorder)
    try:
        seen = {(event["detail"]["thread"], event["detail"]["index"]) for event in reader.events(run_id)}
    finally:
        reader.close()
    assert seen == {(thread, index) for thread in range(4) for index in range(25)}


# --- the SQLite implementation's own promises -------------------------------------------------


def file_state(path: Path) -> tuple[bytes, bytes]:
    """The store's bytes and its write-ahead log's (none counts as empty): what a reader must leave as they are.

    The -shm file is left out: it is SQLite's index of the log, where every reader, read-only ones too,
    marks what it reads.
    """
    log = path.with_name(path.name + "-wal")
    return path.read_bytes(), log.read_bytes() if log.exists() else b""


def read_everything(reader: Reader, run_id: str) -> None:
    reader.runs()
    reader.find_run(run_id[:-1])
    for query in (reader.counts, reader.best_solution, reader.iterations, reader.improver_runs, reader.evaluations,
                  reader.lm_calls, reader.events, reader.final_improver):  # fmt: skip
        query(run_id)
    reader.programs({row["solution_hash"] for row in reader.evaluations(run_id)})


@pytest.mark.parametrize("writer", ["closed", "live"])
def test_the_sqlite_reader_cannot_write_and_leaves_the_file_as_it_found_it(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    run_id = record_a_whole_run(store)["run_id"]
    if writer == "closed":
        store.close()  # the log is folded into the file and removed
    before = file_state(path)
    with StoreReader(path) as reader:
        read_everything(reader, run_id)
        assert file_state(path) == before
        connection = reader._connection  # what the reader reads through: SQLite itself refuses to write with it
        for statement in ("DELETE FROM runs", "CREATE TABLE planted (x)", "PRAGMA user_version = 7"):
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                connection.execute(statement)
    assert file_state(path) == before
    if writer == "live":
        store.close()


def old_store(path: Path, missing: int = 1) -> str:
    """A store as a selftaught that lacked the last `missing` migrations left it, with one run; its run's id."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        for name, script in MIGRATIONS[:-missing]:
            db.executescript(f"{script}; INSERT INTO migrations VALUES ('{name}', 'then');")
        db.execute(
            "INSERT INTO runs (id, command, task, model, seed, config, status, started_at)"
            " VALUES ('20240101-000000-aaaaaa', 'run', 't', 'm', 0, '{\"name\": \"old\"}', 'failed', 'then')"
        )
    db.close()
    return "20240101-000000-aaaaaa"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_reader_refuses_a_store_an_older_selftaught_wrote_and_leaves_it_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    run_id = old_store(path, missing=2)
    before = digest(path)
    with pytest.raises(StoreError, match=r"written by an older selftaught.*selftaught runs --store"):
        StoreReader(path)
    assert digest(path) == before
    ensure_current_schema(path)
    with sqlite3.connect(path) as db:
        assert [row[0] for row in db.execute("SELECT name FROM migrations")] == [name for name, _ in MIGRATIONS]
    db.close()
    with StoreReader(path) as reader:
        run = reader.run(run_id)
    assert (run["status"], run["config"], run["attempts"]) == ("failed", {"name": "old"}, 1)


def test_upgrading_a_current_store_or_none_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    ensure_current_schema(path)
    assert list(tmp_path.iterdir()) == []  # no store is made where there was none
    RunStore(path).close()
    before = digest(path)
    ensure_current_schema(path)
    assert digest(path) == before


def test_a_file_that_is_no_store_is_refused_by_the_reader_and_the_upgrade_alike(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE mine (x)")
    db.close()
    before = digest(path)
    for opening in (StoreReader, ensure_current_schema):
        with pytest.raises(StoreError, match=r"cannot read the run store .*no such table: migrations"):
            opening(path)
    assert digest(path) == before


def test_the_commands_that_read_upgrade_an_older_store_first(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    run_id = old_store(path)
    listed = CliRunner().invoke(cli, ["runs", "--store", str(path), "--json"])
    assert listed.exit_code == 0, listed.output
    assert [run["id"] for run in json.loads(listed.stdout)] == [run_id]
    with StoreReader(path) as reader:  # upgraded for good
        assert reader.run(run_id)["id"] == run_id
