"""An archive to import is someone else's: what it may not choose, hold or make `import` do."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from selftaught import api
from selftaught.archive import checks, unpacking
from selftaught.cli.main import cli
from selftaught.errors import StoreError
from selftaught.llm.base import ChatMessage, CompletionRequest
from selftaught.llm.cache import ResponseCache, response_key
from selftaught.options import refuse_resuming_an_imported_place
from selftaught.sandbox.policy import SandboxPolicy
from selftaught.store import connection
from selftaught.store.migrations import MIGRATIONS_TABLE
from selftaught.store.reading import StoreReader
from selftaught.store.schema import MIGRATIONS
from selftaught.tasks.evaluation import MAX_SCORER_PROBLEMS

RESPONDER = Path(__file__).parent / "responders" / "improving_lpn.py"
RUN_FLAGS = (
    "--iterations", "1", "--lm-calls", "1", "--responses-per-call", "2", "--meta-utility-runs", "1",
    "--meta-utility-budget", "2", "--utility-budget", "2", "--seed", "5", "--workers", "2", "--json",
)  # fmt: skip
SERVER_SPEC = "openai:gpt-4o@http://127.0.0.1:9/v1"
#: What may be done to an archive's SQLite file: a script, a statement with parameters, or anything, given its path.
Edit = str | tuple[str, tuple[Any, ...]] | Callable[[Path], None]


def invoke(*arguments: str) -> Result:
    return CliRunner().invoke(cli, list(arguments), catch_exceptions=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real run's archive, and the run's id."""
    folder = tmp_path_factory.mktemp("exported")
    store = folder / "runs.sqlite"
    ran = invoke("run", "--model", f"scripted:{RESPONDER}", "--store", str(store), "--cache", "off", *RUN_FLAGS)
    assert ran.exit_code == 0, ran.output
    run_id = json.loads(ran.stdout)["run_id"]
    assert invoke("export", run_id, "-o", str(folder / "run.tar.gz"), "--store", str(store)).exit_code == 0
    return folder / "run.tar.gz", run_id


def rebuilt(
    original: Path,
    where: Path,
    *,
    run_sql: Iterable[Edit] = (),
    cache_sql: Iterable[Edit] = (),
    manifest: bytes | None = None,
    extra: Iterable[tuple[tarfile.TarInfo, bytes]] = (),
) -> Path:
    """A copy of the archive with SQL run on its files, another manifest, or more members: as anyone can make one."""
    unpacked = where / "unpacked"
    with tarfile.open(original) as opened:
        names = opened.getnames()
        opened.extractall(unpacked, filter="data")
    for file, edits in (("run.sqlite", run_sql), ("cache.sqlite", cache_sql)):
        for edit in edits:
            if callable(edit):
                edit(unpacked / file)
                continue
            connection = sqlite3.connect(unpacked / file)
            connection.execute(*edit) if isinstance(edit, tuple) else connection.executescript(edit)
            connection.commit()
            connection.close()
    if manifest is not None:
        (unpacked / "manifest.json").write_bytes(manifest)
    hostile = where / "hostile.tar.gz"
    with tarfile.open(hostile, "w:gz") as written:
        for name in names:
            written.add(unpacked / name, arcname=name)
        for member, content in extra:
            member.size = len(content)
            written.addfile(member, io.BytesIO(content))
    return hostile


def with_options(**changes: Any) -> tuple[str, tuple[Any, ...]]:
    return "UPDATE runs SET options = json_patch(options, ?)", (json.dumps(changes),)


def import_into(hostile: Path, store: Path) -> Result:
    return invoke("import", str(hostile), "--store", str(store))


def refused(result: Result, *reasons: str) -> bool:
    """A refusal: one line, no traceback, naming every reason."""
    lines = result.stderr.strip().splitlines()
    return result.exit_code == 2 and len(lines) == 1 and all(reason in lines[0] for reason in reasons)


def stored_options(store: Path, run_id: str) -> dict[str, Any]:
    connection = sqlite3.connect(store)
    [(options,)] = connection.execute("SELECT options FROM runs WHERE id = ?", (run_id,)).fetchall()
    connection.close()
    return dict(json.loads(options))


def run_count(store: Path) -> int:
    if not store.exists():
        return 0
    connection = sqlite3.connect(store)
    count = int(connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
    connection.close()
    return count


# --- options: what the archive's maker may not choose ----------------------------------------------


@pytest.mark.slow
def test_import_resets_the_sandbox_paths_and_workers_an_archive_recorded(
    exported: tuple[Path, str], tmp_path: Path
) -> None:
    original, run_id = exported
    weak = {"strict": False, "fork_server": False, "bubblewrap": False, "stop_when_reporter_reachable": False}
    hostile = rebuilt(
        original,
        tmp_path,
        run_sql=[with_options(sandbox=weak, cache_file=str(tmp_path / "planted.sqlite"), config="/etc/x", workers=64)],
    )
    store = tmp_path / "victim" / "runs.sqlite"
    assert import_into(hostile, store).exit_code == 0
    options = stored_options(store, run_id)
    assert options["sandbox"] == asdict(SandboxPolicy())
    assert options["cache_file"] is None and options["config"] is None
    assert options["workers"] == (os.cpu_count() or 1) and options["imported"] is True


def test_import_keeps_a_stricter_sandbox_than_the_default(exported: tuple[Path, str], tmp_path: Path) -> None:
    original, run_id = exported
    strict = {"strict": True, "fork_server": True, "bubblewrap": True, "stop_when_reporter_reachable": True}
    store = tmp_path / "victim" / "runs.sqlite"
    assert import_into(rebuilt(original, tmp_path, run_sql=[with_options(sandbox=strict)]), store).exit_code == 0
    assert stored_options(store, run_id)["sandbox"] == strict


@pytest.mark.slow
def test_resuming_an_imported_run_refuses_the_server_its_archive_names(
    exported: tuple[Path, str], tmp_path: Path
) -> None:
    original, run_id = exported
    hostile = rebuilt(
        original,
        tmp_path,
        run_sql=[
            with_options(model=SERVER_SPEC, cache_identity=SERVER_SPEC),
            ("UPDATE runs SET model = ?, status = 'interrupted'", (SERVER_SPEC,)),
        ],
    )
    store = tmp_path / "victim" / "runs.sqlite"
    assert import_into(hostile, store).exit_code == 0
    resumed = invoke("run", "--resume", run_id, "--store", str(store))
    assert refused(resumed, "was imported", "http://127.0.0.1:9/v1", f"selftaught run --replay {run_id}")
    with pytest.raises(StoreError, match="was imported"):
        api.resume(run_id, store)
    # The replay it suggests asks no model: the server's URL does not matter to it.
    replayed = invoke("run", "--replay", run_id, "--store", str(store), "--json")
    assert replayed.exit_code == 0, replayed.output


@pytest.mark.parametrize(
    ("model", "refused_place"),
    [
        (SERVER_SPEC, "the server"),
        ("anthropic:claude-sonnet-4-5@https://example.org", "the server"),
        ("scripted:selftaught-runs/tasks/0123456789abcdef/task/evil.py", "the file"),
        ("llamacpp:/tmp/planted.gguf", "the file"),
        ("openai:gpt-4o", None),
        ("llamacpp:smollm2", None),
    ],
)
def test_only_an_imported_run_naming_a_server_or_a_file_may_not_resume(model: str, refused_place: str | None) -> None:
    if refused_place is None:
        refuse_resuming_an_imported_place({"imported": True, "model": model}, "r")
    else:
        with pytest.raises(StoreError, match=refused_place):
            refuse_resuming_an_imported_place({"imported": True, "model": model}, "r")
    refuse_resuming_an_imported_place({"model": model}, "r")  # the user's own run: their own choice


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"task_kind": "builtin", "task": "/tmp/some/folder"}, "there is no such task"),
        ({"task_kind": "folder", "task": "/tmp/some/folder", "task_hash": None}, "without its identity"),
        ({"task_kind": "something else"}, "name no task"),
        ({"model": SERVER_SPEC}, "another model than the run"),
        ({"profile": {"name": "x", "iterations": "many"}}, "profile"),
        ({"seed": "zero"}, "seed"),
        ({"max_cost_usd": -1}, "cost limit"),
    ],
    ids=[
        "builtin_path",
        "folder_without_identity",
        "unknown_kind",
        "other_model",
        "bad_profile",
        "bad_seed",
        "bad_limit",
    ],
)
def test_import_refuses_options_selftaught_does_not_record(
    changes: dict[str, Any], reason: str, exported: tuple[Path, str], tmp_path: Path
) -> None:
    original, run_id = exported
    store = tmp_path / "victim" / "runs.sqlite"
    assert refused(import_into(rebuilt(original, tmp_path, run_sql=[with_options(**changes)]), store), reason, run_id)
    assert run_count(store) == 0


# --- SQLite files: nothing but the tables export writes, and bounded work ----------------------------


FINITE_VIEW = """DROP TABLE events;
CREATE VIEW events AS WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c LIMIT 3)
SELECT i AS id, (SELECT id FROM runs) AS run_id, NULL AS improver_run_id, 'spam' AS kind, '{}' AS detail,
'' AS created_at FROM c;"""
SCHEMAS = {
    # A view runs a query whenever it is read; the one this test dares is finite, unlike an attacker's.
    "view": (FINITE_VIEW, "run.sqlite", "a view 'events'"),
    "trigger": (
        "CREATE TRIGGER t AFTER INSERT ON programs BEGIN DELETE FROM programs; END;",
        "run.sqlite",
        "a trigger 't'",
    ),
    "extra_table": ("CREATE TABLE extra (x);", "run.sqlite", "a table 'extra'"),
    "cache_view": (
        "DROP TABLE responses; CREATE VIEW responses AS SELECT 'k' AS key, 't' AS text, 1 AS prompt_tokens,"
        " 1 AS completion_tokens;",
        "cache.sqlite",
        "a view 'responses'",
    ),
    "other_columns": ("ALTER TABLE iterations DROP COLUMN spent_usd;", "run.sqlite", "a table 'iterations'"),
    "missing_table": ("DROP TABLE migrations;", "run.sqlite", "lacks the table 'migrations'"),
}


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_import_refuses_sqlite_files_with_other_schemas(
    schema: str, exported: tuple[Path, str], tmp_path: Path
) -> None:
    original, _ = exported
    script, file, reason = SCHEMAS[schema]
    hostile = rebuilt(original, tmp_path, **{"run_sql" if file == "run.sqlite" else "cache_sql": [script]})
    store = tmp_path / "victim" / "runs.sqlite"
    assert refused(import_into(hostile, store), f"its {file}", reason)
    assert not store.parent.exists()


def test_statements_on_an_archive_stop_at_their_step_budget(
    exported: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original, _ = exported
    monkeypatch.setattr(connection, "_STEPS_PER_CHECK", 1)
    monkeypatch.setattr(connection, "MIN_STEPS", 100)
    monkeypatch.setattr(connection, "STEPS_PER_BYTE", 0)
    store = tmp_path / "victim" / "runs.sqlite"
    assert refused(import_into(original, store), "stopped after 100 SQLite steps")
    assert run_count(store) == 0


# --- the response cache: only the run's own calls' responses ----------------------------------------


def test_import_adds_no_cache_entry_but_those_of_the_runs_own_calls(exported: tuple[Path, str], tmp_path: Path) -> None:
    original, _ = exported
    unrelated = CompletionRequest(
        messages=(ChatMessage("system", "s"), ChatMessage("user", "an unrelated request")),
        n=1,
        temperature=0.7,
        max_tokens=64,
        seed=0,
    )
    planted_key = response_key("openai:gpt-4o", unrelated, 0)
    hostile = rebuilt(
        original, tmp_path, cache_sql=[("INSERT INTO responses VALUES (?, 'PLANTED', 1, 1)", (planted_key,))]
    )
    store, cache_file = tmp_path / "victim" / "runs.sqlite", tmp_path / "victim" / "cache.sqlite"
    imported = invoke("import", str(hostile), "--store", str(store), "--json")
    assert imported.exit_code == 0, imported.output
    cache = ResponseCache(cache_file)
    try:
        assert cache.get([planted_key]) == {}
    finally:
        cache.close()
    assert json.loads(imported.stdout)["responses"] > 0  # the run's own are there, for `--cache read`


# --- sizes: checked as the archive is read, before it is held ---------------------------------------


def test_import_refuses_a_manifest_over_its_limit(exported: tuple[Path, str], tmp_path: Path) -> None:
    original, _ = exported
    with tarfile.open(original) as opened:
        manifest = opened.extractfile("manifest.json").read()  # type: ignore[union-attr]
    padded = manifest.rstrip()[:-1] + b" " * unpacking.MAX_MANIFEST_BYTES + b"}"
    store = tmp_path / "victim" / "runs.sqlite"
    assert refused(import_into(rebuilt(original, tmp_path, manifest=padded), store), "manifest.json is larger than")


def test_import_refuses_a_run_file_over_its_limit(
    exported: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original, _ = exported
    monkeypatch.setitem(unpacking._MEMBER_LIMITS, "run.sqlite", 1000)
    assert refused(import_into(original, tmp_path / "runs.sqlite"), "run.sqlite is larger than the 1,000 bytes")


def test_import_counts_members_as_they_come(
    exported: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original, _ = exported
    monkeypatch.setattr(unpacking, "MAX_MEMBERS", 5)
    extra = [(tarfile.TarInfo(f"task/f{index}.py"), b"") for index in range(3)]
    hostile = rebuilt(original, tmp_path, extra=extra)
    assert refused(import_into(hostile, tmp_path / "runs.sqlite"), "more than the 5 members")


def test_import_refuses_a_header_over_its_limit_before_holding_it(exported: tuple[Path, str], tmp_path: Path) -> None:
    original, _ = exported
    member = tarfile.TarInfo("task/x.py")
    member.pax_headers = {"comment": "x" * (2 * unpacking.MAX_HEADER_BYTES)}  # tarfile reads a pax header whole
    hostile = rebuilt(original, tmp_path, extra=[(member, b"")])
    assert refused(import_into(hostile, tmp_path / "runs.sqlite"), "its header is larger than")


# --- rows: of the types and shapes the readers expect -----------------------------------------------


def null_purpose(file: Path) -> None:
    """A NULL where the schema says NOT NULL, which SQLite only checks as it writes: a file can hold one."""
    declared, loose = "purpose TEXT NOT NULL", "purpose TEXT"
    for statement, parameters in (
        ("UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE name = 'improver_runs'", (declared, loose)),
        ("UPDATE improver_runs SET purpose = NULL", ()),
        ("UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE name = 'improver_runs'", (loose, declared)),
    ):
        connection = sqlite3.connect(file)  # anew each time: the schema is read as the file is opened
        connection.execute("PRAGMA writable_schema = ON")
        connection.execute(statement, parameters)
        connection.commit()
        connection.close()


TOO_MANY_PROBLEMS = json.dumps([["p", 1]] * (MAX_SCORER_PROBLEMS + 2))
ROWS: dict[str, tuple[Edit, str]] = {
    "text_meta_utility": ("UPDATE iterations SET meta_utility_val = 'abc'", "iterations.meta_utility_val"),
    "config_not_json": ("UPDATE runs SET config = 'not json {'", "runs.config"),
    "violations_shape": ("UPDATE evaluations SET violations = '{\"a\": 1}'", "evaluations.violations"),
    "scorer_problems_shape": ("UPDATE evaluations SET scorer_problems = '[[1, 2, 3]]'", "evaluations.scorer_problems"),
    "too_many_scorer_problems": (
        ("UPDATE evaluations SET scorer_problems = ?", (TOO_MANY_PROBLEMS,)),
        "evaluations.scorer_problems",
    ),
    "seed_text": ("UPDATE runs SET seed = 'zero'", "runs.seed"),
    "infinite_score": ("UPDATE evaluations SET score = 1e999", "evaluations.score"),
    "result_not_object": ("UPDATE runs SET result = '[1, 2]'", "runs.result"),
    "not_utf8": ("UPDATE runs SET task = CAST(x'ff' AS TEXT)", "runs.task"),
    "blob": ("UPDATE lm_calls SET backend = x'00'", "lm_calls.backend"),
    "request_shape": ("UPDATE lm_calls SET request = '{\"n\": 1}'", "lm_calls.request"),
    "responses_shape": ("UPDATE lm_calls SET responses = '[1]'", "lm_calls.responses"),
    "deep_json": (f"UPDATE lm_calls SET responses = '{'[' * 100_000}{']' * 100_000}'", "lm_calls.responses"),
    "event_ids": (
        "INSERT INTO events (run_id, kind, detail, created_at) SELECT id, 'speculation',"
        " '{\"improver_run_ids\": [\"x\"]}', '' FROM runs",
        "events.detail",
    ),
    "empty_not_null": (null_purpose, "improver_runs.purpose"),
}


@pytest.mark.parametrize("malformed", sorted(ROWS))
def test_import_refuses_malformed_rows_naming_table_and_column(
    malformed: str, exported: tuple[Path, str], tmp_path: Path
) -> None:
    original, _ = exported
    edit, column = ROWS[malformed]
    hostile = rebuilt(original, tmp_path, run_sql=[edit])
    store = tmp_path / "victim" / "runs.sqlite"
    assert refused(import_into(hostile, store), column)
    assert not store.parent.exists()


def test_import_refuses_a_program_that_is_not_the_one_its_hash_names(
    exported: tuple[Path, str], tmp_path: Path
) -> None:
    original, _ = exported
    swapped = "UPDATE programs SET source = 'def improve_algorithm(*a):\n    return 0\n' WHERE kind = 'improver'"
    store = tmp_path / "victim" / "runs.sqlite"
    assert refused(import_into(rebuilt(original, tmp_path, run_sql=[swapped]), store), "is not the one its hash names")


def test_an_imported_event_names_the_improver_runs_by_their_ids_here(
    exported: tuple[Path, str], tmp_path: Path
) -> None:
    original, run_id = exported
    store = tmp_path / "victim" / "runs.sqlite"
    assert import_into(original, store).exit_code == 0  # the store now has improver runs of its own
    renamed = "20990101-000000-abcdef"
    tables = ("improver_runs", "evaluations", "lm_calls", "events", "iterations")
    hostile = rebuilt(
        original,
        tmp_path,
        run_sql=[
            ("UPDATE runs SET id = ?", (renamed,)),
            *((f"UPDATE {table} SET run_id = ?", (renamed,)) for table in tables),
            "INSERT INTO events (run_id, improver_run_id, kind, detail, created_at) SELECT run_id, id, 'speculation',"
            " json_object('improver_run_ids', json_array(id)), '' FROM improver_runs",
        ],
        manifest=json.dumps({"format": unpacking.ARCHIVE_FORMAT, "run_id": renamed}).encode(),
    )
    assert import_into(hostile, store).exit_code == 0
    connection = sqlite3.connect(store)
    rows = connection.execute(
        "SELECT improver_run_id, detail FROM events WHERE run_id = ? AND kind = 'speculation'", (renamed,)
    )
    named = [(improver_run_id, json.loads(detail)["improver_run_ids"]) for improver_run_id, detail in rows]
    connection.close()
    assert named and all(ids == [improver_run_id] for improver_run_id, ids in named)
    assert run_id != renamed


def test_the_scorer_problems_an_archive_may_hold_are_those_an_evaluation_keeps() -> None:
    assert checks.MAX_SCORER_PROBLEMS_KEPT == MAX_SCORER_PROBLEMS + 1


# --- archives of an earlier selftaught ---------------------------------------------------------------


def as_exported_before(migration: str, *then: str) -> Callable[[Path], None]:
    """An edit making the archive's run.sqlite the one an earlier selftaught exported: its schema lacks `migration`
    and those after it, its rows are the same. `then` is run on it after."""

    def edit(file: Path) -> None:
        older = file.with_name("older.sqlite")
        connection = sqlite3.connect(older, isolation_level=None)
        connection.execute(MIGRATIONS_TABLE)
        for name, script in MIGRATIONS[: [name for name, _ in MIGRATIONS].index(migration)]:
            connection.executescript(f"{script}; INSERT INTO migrations VALUES ('{name}', 'then');")
        connection.execute("ATTACH DATABASE ? AS current", (str(file),))
        for table in ("runs", "programs", "improver_runs", "evaluations", "lm_calls", "events", "iterations"):
            columns = ", ".join(row[1] for row in connection.execute(f"PRAGMA main.table_info({table})"))
            connection.execute(f"INSERT INTO main.{table} ({columns}) SELECT {columns} FROM current.{table}")
        connection.execute("DETACH DATABASE current")
        for statement in then:
            connection.executescript(statement)
        connection.close()
        older.replace(file)

    return edit


@pytest.mark.parametrize(
    "claimed",
    ["", "INSERT INTO migrations VALUES ('0009_evaluation_nodes', 'then')"],
    ids=["as_made", "claiming_every_migration"],
)
def test_import_upgrades_an_archive_an_earlier_selftaught_exported(
    claimed: str, exported: tuple[Path, str], tmp_path: Path
) -> None:
    original, run_id = exported
    older = rebuilt(original, tmp_path, run_sql=[as_exported_before("0009_evaluation_nodes", claimed)])
    store = tmp_path / "victim" / "runs.sqlite"
    imported = import_into(older, store)
    assert imported.exit_code == 0, imported.output
    with StoreReader(store) as reader:
        evaluations = reader.evaluations(run_id)
    assert evaluations and all(row["node"] is None for row in evaluations)


def test_import_refuses_an_earlier_schema_with_anything_more(exported: tuple[Path, str], tmp_path: Path) -> None:
    original, _ = exported
    edit = as_exported_before("0009_evaluation_nodes", "CREATE TABLE extra (x)")
    store = tmp_path / "victim" / "runs.sqlite"
    assert refused(import_into(rebuilt(original, tmp_path, run_sql=[edit]), store), "its run.sqlite", "'extra'")
    assert not store.parent.exists()
