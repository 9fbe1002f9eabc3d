"""One run as a .tar.gz: its records and its responses, to inspect, resume or replay on another machine.

The archive holds `manifest.json`, `run.sqlite` (a store with only that run) and `cache.sqlite`
(the run's responses under the response cache's keys, so `--cache read` finds them too).
"""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selftaught import __version__
from selftaught.errors import StoreError
from selftaught.llm.base import ChatMessage, CompletionRequest
from selftaught.llm.cache import ResponseCache, response_key
from selftaught.store.reading import StoreReader
from selftaught.store.run_store import RunStore, describe_sqlite_error

ARCHIVE_FORMAT = 1
MEMBERS = ("manifest.json", "run.sqlite", "cache.sqlite")
#: Far above any real run; stops a hostile archive from filling the disk.
MAX_MEMBER_BYTES = 4 * 1024**3

#: Tables holding a run's rows, parents first, and their columns that point at improver runs.
_RUN_TABLES = ("improver_runs", "evaluations", "lm_calls", "events", "iterations")
_IMPROVER_RUN_REFERENCES = {
    "improver_runs": ("id", "parent_id"),
    "evaluations": ("improver_run_id",),
    "lm_calls": ("improver_run_id",),
    "events": ("improver_run_id",),
    "iterations": ("improver_run_id",),
}


@dataclass(frozen=True)
class ArchiveSummary:
    run_id: str
    lm_calls: int
    responses: int
    evaluations: int


def export_run(store: Path, run_id: str, output: Path) -> ArchiveSummary:
    with StoreReader(store) as reader:
        run = reader.run(run_id)
        calls = reader.lm_calls(run["id"])
        evaluations = reader.counts(run["id"])["evaluations"]
    run_id = run["id"]
    identity = (run["options"] or {}).get("cache_identity") or run["model"]
    with tempfile.TemporaryDirectory(prefix="selftaught-export-") as folder:
        staging = Path(folder)
        RunStore(staging / "run.sqlite").close()
        _copy_run(store, staging / "run.sqlite", run_id)
        cache = ResponseCache(staging / "cache.sqlite")
        entries = _cache_entries(identity, calls)
        cache.put(entries)
        cache.close()
        manifest = {"format": ARCHIVE_FORMAT, "run_id": run_id, "selftaught": __version__, "model": run["model"]}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        output.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(output, "w:gz") as archive:
            for name in MEMBERS:
                archive.add(staging / name, arcname=name)
    return ArchiveSummary(run_id, len(calls), len(entries), evaluations)


def import_run(archive_path: Path, store: Path, cache_file: Path) -> ArchiveSummary:
    """Adds the archived run to `store` and its responses to `cache_file`; refuses a run already there."""
    with tempfile.TemporaryDirectory(prefix="selftaught-import-") as folder:
        staging = Path(folder)
        manifest = _unpack(archive_path, staging)
        run_id = str(manifest["run_id"])
        target = RunStore(store)
        target.close()
        with StoreReader(store) as reader:
            if reader.has_run(run_id):
                raise StoreError(f"run {run_id} is already in {store}")
        entries = _archived_responses(archive_path, staging / "cache.sqlite")  # before anything is written
        _copy_run(staging / "run.sqlite", store, run_id, imported=True)
        cache = ResponseCache(cache_file)
        cache.put(entries)
        cache.close()
    with StoreReader(store) as reader:
        counts = reader.counts(run_id)
    return ArchiveSummary(run_id, counts["lm_calls"], len(entries), counts["evaluations"])


def _archived_responses(archive_path: Path, cache_file: Path) -> list[tuple[str, str, int, int]]:
    connection = sqlite3.connect(cache_file)
    try:
        connection.execute("PRAGMA trusted_schema = OFF")
        return connection.execute("SELECT key, text, prompt_tokens, completion_tokens FROM responses").fetchall()
    except sqlite3.Error as error:
        raise StoreError(f"{archive_path}: its cache.sqlite is unreadable: {describe_sqlite_error(error)}") from None
    finally:
        connection.close()


def _cache_entries(identity: str, calls: list[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    entries: list[tuple[str, str, int, int]] = []
    for call in calls:
        if not StoreReader.answered_in_full(call):
            continue
        request_data, responses = call["request"], call["responses"]
        request = CompletionRequest(
            messages=(ChatMessage("system", request_data["system"]), ChatMessage("user", request_data["message"])),
            n=request_data["n"],
            temperature=request_data["temperature"],
            max_tokens=request_data["max_tokens"],
            seed=request_data["seed"],
        )
        count = len(responses) or 1
        prompt_tokens, completion_tokens = call["prompt_tokens"] // count, call["completion_tokens"] // count
        entries.extend(
            (response_key(identity, request, index), text, prompt_tokens, completion_tokens)
            for index, text in enumerate(responses)
        )
    return entries


def _copy_run(source: Path, target: Path, run_id: str, imported: bool = False) -> None:
    """Copies one run's rows; improver-run ids are shifted past the target's so they never collide."""
    connection = sqlite3.connect(target, isolation_level=None)
    try:
        # An imported file is someone else's: its schema may not run functions in views or triggers.
        connection.execute("PRAGMA trusted_schema = OFF")
        connection.execute("ATTACH DATABASE ? AS source", (str(source),))
        connection.execute("BEGIN")
        offset = connection.execute("SELECT COALESCE(MAX(id), 0) FROM main.improver_runs").fetchone()[0]
        run_columns = _columns(connection, "runs")
        connection.execute(
            f"INSERT INTO main.runs ({', '.join(run_columns)})"
            f" SELECT {', '.join(run_columns)} FROM source.runs WHERE id = ?",
            (run_id,),
        )
        if imported:
            # No process here runs it: a run that was going when exported is resumable, as if interrupted.
            connection.execute(
                "UPDATE main.runs SET host = NULL, pid = NULL, process = NULL,"
                " status = CASE WHEN status = 'running' THEN 'interrupted' ELSE status END WHERE id = ?",
                (run_id,),
            )
        for table in _RUN_TABLES:
            columns = [name for name in _columns(connection, table) if not (name == "id" and table != "improver_runs")]
            references = _IMPROVER_RUN_REFERENCES[table]
            selected = [f"{name} + {offset}" if name in references else name for name in columns]
            connection.execute(
                f"INSERT INTO main.{table} ({', '.join(columns)})"
                f" SELECT {', '.join(selected)} FROM source.{table} WHERE run_id = ? ORDER BY rowid",
                (run_id,),
            )
        connection.execute(
            "INSERT OR IGNORE INTO main.programs SELECT * FROM source.programs WHERE hash IN ("
            " SELECT improver_hash FROM source.improver_runs WHERE run_id = :run"
            " UNION SELECT initial_hash FROM source.improver_runs WHERE run_id = :run"
            " UNION SELECT solution_hash FROM source.improver_runs WHERE run_id = :run"
            " UNION SELECT solution_hash FROM source.evaluations WHERE run_id = :run"
            " UNION SELECT improver_hash FROM source.iterations WHERE run_id = :run"
            " UNION SELECT candidate_hash FROM source.iterations WHERE run_id = :run"
            " UNION SELECT json_extract(options, '$.initial_improver_hash') FROM source.runs WHERE id = :run)",
            {"run": run_id},
        )
        connection.execute("COMMIT")
    except sqlite3.Error as error:
        raise StoreError(f"cannot copy run {run_id} into {target}: {describe_sqlite_error(error)}") from None
    finally:
        connection.close()


def _columns(connection: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in connection.execute(f"PRAGMA main.table_info({table})")]


def _unpack(archive_path: Path, staging: Path) -> dict[str, Any]:
    """Extracts exactly the expected regular files, refusing anything else in the archive."""
    try:
        with tarfile.open(archive_path, "r:gz") as archive:
            members = {member.name: member for member in archive.getmembers()}
            if sorted(members) != sorted(MEMBERS):
                raise StoreError(
                    f"{archive_path} is not a selftaught run archive (it holds {', '.join(sorted(members))[:200]})"
                )
            for name, member in members.items():
                if not member.isfile() or member.size > MAX_MEMBER_BYTES:
                    raise StoreError(f"{archive_path}: {name} is not a regular file of a plausible size")
                extracted = archive.extractfile(member)
                assert extracted is not None
                with extracted, (staging / name).open("wb") as target:
                    while chunk := extracted.read(io.DEFAULT_BUFFER_SIZE * 16):
                        target.write(chunk)
    except FileNotFoundError:
        raise StoreError(f"no such archive: {archive_path}") from None
    except (tarfile.TarError, OSError, EOFError) as error:
        raise StoreError(f"cannot read the archive {archive_path}: {error}") from None
    try:
        manifest = json.loads((staging / "manifest.json").read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise StoreError(f"{archive_path}: manifest.json is unreadable: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT or "run_id" not in manifest:
        raise StoreError(f"{archive_path}: unknown archive format (made by a different selftaught version?)")
    return manifest
