"""One run as a .tar.gz: its records and its responses, to inspect, resume or replay on another machine.

The archive holds `manifest.json`, `run.sqlite` (a store with only that run) and `cache.sqlite`
(the run's responses under the response cache's keys, so `--cache read` finds them too). A run
on a task folder also has the folder's files under `task/` (see `selftaught.tasks.folder_identity`
for which), which `import` restores beside the store, where `--replay` and `--resume` find them.
An archive is untrusted input: it is unpacked member by member, and anything but the expected
regular files under safe names is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
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
from selftaught.tasks.folder_identity import (
    LOADER_FILES,
    MAX_TASK_FILE_BYTES,
    MAX_TASK_FILES,
    MAX_TASK_FOLDER_BYTES,
    TaskFolderFiles,
    contents_identity,
    identity_or_none,
    is_folder_name,
    is_task_file_name,
    locate_task_folder,
    restored_task_folder,
    task_folder_files,
    task_folder_identity,
)

ARCHIVE_FORMAT = 1
MEMBERS = ("manifest.json", "run.sqlite", "cache.sqlite")
#: Far above any real run; stops a hostile archive from filling the disk.
MAX_MEMBER_BYTES = 4 * 1024**3
#: The task folder's files are members under this prefix.
TASK_PREFIX = "task/"
_IDENTITY = re.compile(r"[0-9a-f]{64}")

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
    #: The run's task folder: the one packed (export) or restored (import), if it ran on one.
    task_folder: Path | None = None
    #: What the user should know about the task folder: files left out, or why it is not in the archive.
    task_notes: tuple[str, ...] = ()


def export_run(store: Path, run_id: str, output: Path) -> ArchiveSummary:
    with StoreReader(store) as reader:
        run = reader.run(run_id)
        calls = reader.lm_calls(run["id"])
        evaluations = reader.counts(run["id"])["evaluations"]
    run_id = run["id"]
    task_files, task_notes = _task_folder_to_pack(run, store)
    identity = (run["options"] or {}).get("cache_identity") or run["model"]
    with tempfile.TemporaryDirectory(prefix="selftaught-export-") as folder:
        staging = Path(folder)
        RunStore(staging / "run.sqlite").close()
        _copy_run(store, staging / "run.sqlite", run_id)
        cache = ResponseCache(staging / "cache.sqlite")
        entries = _cache_entries(identity, calls)
        cache.put(entries)
        cache.close()
        manifest: dict[str, Any] = {
            "format": ARCHIVE_FORMAT, "run_id": run_id, "selftaught": __version__, "model": run["model"]
        }  # fmt: skip
        task_hash = run["options"]["task_hash"] if task_files is not None else None
        if task_hash is not None:
            # The name `import` restores it under and `--replay` looks for: the recorded folder's, when it is safe.
            recorded_name = Path(run["options"]["task"]).name
            manifest["task_folder"] = {
                "name": restored_task_folder(store, task_hash, recorded_name).name,
                "hash": task_hash,
            }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        output.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(output, "w:gz") as archive:
            for name in MEMBERS:
                archive.add(staging / name, arcname=name)
            packed_hash = _pack_task_files(archive, task_files) if task_files is not None else None
        if packed_hash != task_hash:
            output.unlink()
            raise StoreError(
                f"cannot export run {run_id}: its task folder changed while it was packed; export it again"
            )
    return ArchiveSummary(
        run_id, len(calls), len(entries), evaluations, task_files.folder if task_files else None, task_notes
    )


def _task_folder_to_pack(run: dict[str, Any], store: Path) -> tuple[TaskFolderFiles | None, tuple[str, ...]]:
    """The files of the run's task folder, as the run recorded them, and what to tell about them."""
    options = run["options"] or {}
    if options.get("task_kind") != "folder":
        return None, ()
    if options.get("task_hash") is None:
        return None, (
            f"the archive does not hold the task folder {options['task']}: the run was recorded by a selftaught "
            "that did not note which files it had",
        )
    folder = locate_task_folder(
        options["task"], options["task_hash"], store, run["id"], None, hint="put them back there to export the run"
    )
    files = task_folder_files(Path(folder))
    for name, why in files.skipped:
        if name in LOADER_FILES:
            raise StoreError(
                f"cannot export run {run['id']}: {Path(folder) / name} is {why}, and without it the task cannot run"
            )
    return files, tuple(f"left out of the archive: {message}" for message in files.skipped_messages())


def _pack_task_files(archive: tarfile.TarFile, files: TaskFolderFiles) -> str:
    """Adds the files as plain members (a link inside the folder becomes the file it leads to); their identity."""
    digests = []
    for name, path in files.files:
        content = path.read_bytes()  # once: what is packed is what is hashed, even if the file changes meanwhile
        member = tarfile.TarInfo(TASK_PREFIX + name)
        member.size, member.mode = len(content), 0o644
        archive.addfile(member, io.BytesIO(content))
        digests.append((name, hashlib.sha256(content).hexdigest()))
    return contents_identity(digests)


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
        task_folder = None
        if manifest.get("task_folder") is not None:
            identity = _checked_task_folder(archive_path, staging, manifest, run_id)
            task_folder = restored_task_folder(store, identity, manifest["task_folder"]["name"])
            _restore_task_folder(staging / TASK_PREFIX, task_folder, identity)
        _copy_run(staging / "run.sqlite", store, run_id, imported=True)
        cache = ResponseCache(cache_file)
        cache.put(entries)
        cache.close()
    with StoreReader(store) as reader:
        counts = reader.counts(run_id)
    return ArchiveSummary(run_id, counts["lm_calls"], len(entries), counts["evaluations"], task_folder)


def _checked_task_folder(archive_path: Path, staging: Path, manifest: dict[str, Any], run_id: str) -> str:
    """The identity of the unpacked task folder, which must be the one its manifest and its run recorded."""
    identity = manifest["task_folder"]["hash"]
    if task_folder_identity(staging / TASK_PREFIX) != identity:
        raise StoreError(f"{archive_path}: its task folder's files are not those its manifest names")
    if _recorded_task_hash(archive_path, staging / "run.sqlite", run_id) != identity:
        raise StoreError(f"{archive_path}: its task folder is not the one run {run_id} recorded")
    return str(identity)


def _recorded_task_hash(archive_path: Path, run_file: Path, run_id: str) -> object:
    connection = sqlite3.connect(run_file)
    try:
        connection.execute("PRAGMA trusted_schema = OFF")
        row = connection.execute(
            "SELECT json_extract(options, '$.task_hash') FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
    except sqlite3.Error as error:
        raise StoreError(f"{archive_path}: its run.sqlite is unreadable: {describe_sqlite_error(error)}") from None
    finally:
        connection.close()
    return row[0] if row else None


def _restore_task_folder(unpacked: Path, destination: Path, identity: str) -> None:
    """Puts the folder at `destination` whole or not at all; a folder already there must have the same files."""
    if destination.exists() or destination.is_symlink():
        if identity_or_none(destination) == identity:
            return
        raise StoreError(f"{destination} exists with other files; move it away and import again")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    try:
        shutil.copytree(unpacked, partial, dirs_exist_ok=True)
        partial.rename(destination)
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        if identity_or_none(destination) != identity:  # unless another import of the same folder came first
            raise StoreError(f"cannot restore the task folder to {destination}: {error}") from None


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
            members = archive.getmembers()
            _check_members(archive_path, members)
            (staging / TASK_PREFIX).mkdir()
            for member in members:
                extracted = archive.extractfile(member)
                assert extracted is not None
                # Only checked names (no "..", no absolute path) under our own fresh folder, and never over a file.
                target = staging / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                with extracted, target.open("xb") as written:
                    while chunk := extracted.read(io.DEFAULT_BUFFER_SIZE * 16):
                        written.write(chunk)
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
    _check_task_manifest(archive_path, manifest, any(member.name.startswith(TASK_PREFIX) for member in members))
    return manifest


def _check_members(archive_path: Path, members: list[tarfile.TarInfo]) -> None:
    """The run's members once each, task files under safe names within the task folder's limits; all regular files."""
    names = [member.name for member in members]
    if sorted(name for name in names if not name.startswith(TASK_PREFIX)) != sorted(MEMBERS):
        raise StoreError(f"{archive_path} is not a selftaught run archive (it holds {', '.join(sorted(names))[:200]})")
    if len(set(names)) != len(names):
        raise StoreError(f"{archive_path}: a member appears twice")
    for member in members:
        if not member.isfile() or member.size > MAX_MEMBER_BYTES:
            raise StoreError(f"{archive_path}: {member.name!r} is not a regular file of a plausible size")
    task_members = [member for member in members if member.name.startswith(TASK_PREFIX)]
    for member in task_members:
        if not is_task_file_name(member.name.removeprefix(TASK_PREFIX)):
            raise StoreError(f"{archive_path}: {member.name!r} is not a name a task folder's file may have")
        if member.size > MAX_TASK_FILE_BYTES:
            raise StoreError(f"{archive_path}: {member.name!r} is larger than a task folder's file may be")
    if len(task_members) > MAX_TASK_FILES or sum(member.size for member in task_members) > MAX_TASK_FOLDER_BYTES:
        raise StoreError(f"{archive_path}: its task folder is larger than a task folder may be")


def _check_task_manifest(archive_path: Path, manifest: dict[str, Any], has_task_files: bool) -> None:
    described = manifest.get("task_folder")
    if described is None and not has_task_files:
        return
    if not (
        isinstance(described, dict)
        and isinstance(described.get("name"), str)
        and is_folder_name(described["name"])
        and isinstance(described.get("hash"), str)
        and _IDENTITY.fullmatch(described["hash"])
    ):
        raise StoreError(f"{archive_path}: its manifest does not describe its task folder as expected")
