"""One run as a .tar.gz: its records and its responses, to inspect, resume or replay on another machine.

The archive holds `manifest.json`, `run.sqlite` (a store with only that run) and `cache.sqlite`
(the run's responses under the response cache's keys; `import` files them anew from the run's own
calls, so that `--cache read` finds them too, and takes none of the archive's). A run
on a task folder also has the folder's files under `task/` (see `selftaught.tasks.folder_identity`
for which), which `import` restores beside the store, where `--replay` and `--resume` find them.
An archive is untrusted input: `selftaught.archive.unpacking` reads it within size limits, refusing
anything but the expected files as it comes, and `selftaught.archive.checks` checks its SQLite
files before a row of them is copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import sqlite3
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selftaught.archive.checks import RUN_TABLES, budget_for, check_run_schema, check_schema, read_archived_run
from selftaught.archive.unpacking import ARCHIVE_FORMAT, MEMBERS, TASK_PREFIX, unpack
from selftaught.errors import StoreError
from selftaught.llm.base import CompletionRequest
from selftaught.llm.cache import ResponseCache, response_key
from selftaught.store.connection import StepBudget
from selftaught.store.migrations import ensure_current_schema, store_files
from selftaught.store.reading import StoreReader, answered_in_full
from selftaught.store.run_store import RunStore
from selftaught.tasks.folder_identity import (
    LOADER_FILES,
    TaskFolderFiles,
    contents_identity,
    identity_or_none,
    locate_task_folder,
    restored_task_folder,
    task_folder_files,
    task_folder_identity,
)
from selftaught.version import __version__

#: The columns of a run's tables (`RUN_TABLES`, parents first) that point at improver runs.
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


def export_run(reader: StoreReader, run_id: str, output: Path) -> ArchiveSummary:
    """Writes the run (by id or unique prefix) of the store `reader` reads, with its responses, to `output`.

    The run's rows are copied from the store's file, which is opened read-only.
    """
    store = reader.path
    run = reader.run(run_id)
    calls = reader.lm_calls(run["id"])
    evaluations = reader.counts(run["id"])["evaluations"]
    run_id = run["id"]
    task_files, task_notes = _task_folder_to_pack(run, store)
    identity = (run["options"] or {}).get("cache_identity") or run["model"]
    with tempfile.TemporaryDirectory(prefix="selftaught-export-") as folder:
        staging = Path(folder)
        RunStore(staging / "run.sqlite").close()
        _copy_run(store, staging / "run.sqlite", run_id, budget_for(*store_files(store)))
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
        packed_hash = _write_archive(output, staging, task_files, run_id)
        if packed_hash != task_hash:
            output.unlink()
            raise StoreError(
                f"cannot export run {run_id}: its task folder changed while it was packed; export it again"
            )
    return ArchiveSummary(
        run_id, len(calls), len(entries), evaluations, task_files.folder if task_files else None, task_notes
    )


def _write_archive(output: Path, staging: Path, task_files: TaskFolderFiles | None, run_id: str) -> str | None:
    """Packs the staged files and the task folder's into `output`; the identity of the task files packed.

    A file that cannot be written (or read) is a StoreError, and leaves no partial archive behind.
    """
    started = False
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(output, "w:gz") as archive:
            started = True  # only now is `output` the archive's: a file it could not open is left as it was
            for name in MEMBERS:
                archive.add(staging / name, arcname=name)
            return _pack_task_files(archive, task_files) if task_files is not None else None
    except OSError as error:
        if started:
            with contextlib.suppress(OSError):
                output.unlink()
        raise StoreError(f"cannot export run {run_id} to {output}: {error.strerror or error}") from None


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


@dataclass(frozen=True)
class _Imported:
    """What an imported run's rows are copied with: its options as this store keeps them, its checked programs."""

    options: dict[str, Any]
    programs: list[tuple[str, str, str]]


def import_run(archive_path: Path, store: Path, cache_file: Path) -> ArchiveSummary:
    """Adds the archived run to `store` and its responses to `cache_file`; refuses a run already there.

    Nothing is written before the whole archive is checked: a refused archive leaves no store, folder
    or file behind (but for a store an older selftaught wrote, upgraded as every command does). The
    run's options are kept as `selftaught.options.imported_options` rewrites them, and the cache gets
    the responses of the run's own calls, filed as `export` files them: never what the archive's
    cache.sqlite holds under keys of its own, which could answer another request than the one it was
    recorded for.
    """
    from selftaught.options import imported_options  # it loads the tasks, and numpy: `export` must not

    with tempfile.TemporaryDirectory(prefix="selftaught-import-") as folder:
        staging = Path(folder)
        manifest = unpack(archive_path, staging)
        run_id = manifest["run_id"]
        _check_schemas(archive_path, staging)
        archived = read_archived_run(f"{archive_path}: its run.sqlite", staging / "run.sqlite", run_id)
        try:
            options = imported_options(archived.run["options"], run_id, archived.run["model"])
        except StoreError as error:
            raise StoreError(f"{archive_path}: {error}") from None
        entries = _cache_entries(options["cache_identity"], archived.calls)
        task_folder: Path | None = None
        identity: str | None = None
        if manifest.get("task_folder") is not None:
            identity = _checked_task_folder(archive_path, staging, manifest, run_id, options.get("task_hash"))
            task_folder = restored_task_folder(store, identity, manifest["task_folder"]["name"])
            _check_task_folder_place(task_folder, identity)
        _refuse_a_run_already_there(store, run_id)
        # The archive is accepted: from here on, the store, the task folder and the cache are written.
        RunStore(store).close()
        if task_folder is not None and identity is not None:
            _restore_task_folder(staging / TASK_PREFIX, task_folder, identity)
        imported = _Imported(options, archived.programs)
        _copy_run(staging / "run.sqlite", store, run_id, budget_for(staging / "run.sqlite"), imported)
        cache = ResponseCache(cache_file)
        cache.put(entries)
        cache.close()
    with StoreReader(store) as reader:
        counts = reader.counts(run_id)
    return ArchiveSummary(run_id, counts["lm_calls"], len(entries), counts["evaluations"], task_folder)


def _refuse_a_run_already_there(store: Path, run_id: str) -> None:
    if not store.is_file():
        return
    ensure_current_schema(store)
    with StoreReader(store) as reader:
        if reader.has_run(run_id):
            raise StoreError(f"run {run_id} is already in {store}")


def _check_schemas(archive_path: Path, staging: Path) -> None:
    """Its SQLite files must have exactly the schema of those `export` writes (no view, no trigger, nothing else),
    or for its run.sqlite the schema an earlier selftaught's `export` wrote, which is upgraded here."""
    reference = staging / "reference"
    reference.mkdir()
    ResponseCache(reference / "cache.sqlite").close()
    check_run_schema(f"{archive_path}: its run.sqlite", staging / "run.sqlite")
    check_schema(f"{archive_path}: its cache.sqlite", staging / "cache.sqlite", reference / "cache.sqlite")


def _checked_task_folder(
    archive_path: Path, staging: Path, manifest: dict[str, Any], run_id: str, recorded: object
) -> str:
    """The identity of the unpacked task folder, which must be the one its manifest and its run recorded."""
    identity = manifest["task_folder"]["hash"]
    if task_folder_identity(staging / TASK_PREFIX) != identity:
        raise StoreError(f"{archive_path}: its task folder's files are not those its manifest names")
    if recorded != identity:
        raise StoreError(f"{archive_path}: its task folder is not the one run {run_id} recorded")
    return str(identity)


def _check_task_folder_place(destination: Path, identity: str) -> None:
    """A folder already where the task folder goes must have the same files: it is then left as it is."""
    if (destination.exists() or destination.is_symlink()) and identity_or_none(destination) != identity:
        raise StoreError(f"{destination} exists with other files; move it away and import again")


def _restore_task_folder(unpacked: Path, destination: Path, identity: str) -> None:
    """Puts the folder at `destination` whole or not at all; a folder already there must have the same files."""
    _check_task_folder_place(destination, identity)  # again: another process may have put one there since
    if destination.exists():
        return
    partial: Path | None = None
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
        shutil.copytree(unpacked, partial, dirs_exist_ok=True)
        partial.rename(destination)
    except OSError as error:
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        if identity_or_none(destination) != identity:  # unless another import of the same folder came first
            raise StoreError(f"cannot restore the task folder to {destination}: {error}") from None


def _cache_entries(identity: str, calls: list[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    entries: list[tuple[str, str, int, int]] = []
    for call in calls:
        if not answered_in_full(call):
            continue
        request_data, responses = call["request"], call["responses"]
        request = CompletionRequest.from_record(request_data)
        count = len(responses) or 1
        prompt_tokens, completion_tokens = call["prompt_tokens"] // count, call["completion_tokens"] // count
        entries.extend(
            (response_key(identity, request, index), text, prompt_tokens, completion_tokens)
            for index, text in enumerate(responses)
        )
    return entries


def _copy_run(source: Path, target: Path, run_id: str, budget: StepBudget, imported: _Imported | None = None) -> None:
    """Copies one run's rows, its statements under `budget`; improver-run ids are shifted past the target's so they
    never collide."""
    # URIs allowed, so that the source is attached read-only; the target is named by an absolute path, which no
    # URI starts as.
    connection = sqlite3.connect(target.absolute(), isolation_level=None, uri=True)
    budget.install(connection)
    try:
        # An imported file is someone else's: its schema may not run functions in views or triggers.
        connection.execute("PRAGMA trusted_schema = OFF")
        connection.execute("ATTACH DATABASE ? AS source", (source.absolute().as_uri() + "?mode=ro",))
        connection.execute("BEGIN")
        offset = connection.execute("SELECT COALESCE(MAX(id), 0) FROM main.improver_runs").fetchone()[0]
        run_columns = _columns(connection, "runs")
        connection.execute(
            f"INSERT INTO main.runs ({', '.join(run_columns)})"
            f" SELECT {', '.join(run_columns)} FROM source.runs WHERE id = ?",
            (run_id,),
        )
        if imported is not None:
            # No process here runs it: a run that was going when exported is resumable, as if interrupted.
            connection.execute(
                "UPDATE main.runs SET host = NULL, pid = NULL, process = NULL, options = ?,"
                " status = CASE WHEN status = 'running' THEN 'interrupted' ELSE status END WHERE id = ?",
                (json.dumps(imported.options), run_id),
            )
        for table in RUN_TABLES:
            columns = [name for name in _columns(connection, table) if not (name == "id" and table != "improver_runs")]
            references = _IMPROVER_RUN_REFERENCES[table]
            selected = [f"{name} + {offset}" if name in references else name for name in columns]
            connection.execute(
                f"INSERT INTO main.{table} ({', '.join(columns)})"
                f" SELECT {', '.join(selected)} FROM source.{table} WHERE run_id = ? ORDER BY rowid",
                (run_id,),
            )
        # What an event says of improver runs names them by id too.
        connection.execute(
            "UPDATE main.events SET detail = json_set(detail, '$.improver_run_ids', json((SELECT"
            " json_group_array(value + :offset) FROM json_each(main.events.detail, '$.improver_run_ids'))))"
            " WHERE run_id = :run AND json_type(detail, '$.improver_run_ids') = 'array'",
            {"offset": offset, "run": run_id},
        )
        _copy_programs(connection, run_id, imported)
        connection.execute("COMMIT")
    except (sqlite3.Error, UnicodeDecodeError) as error:
        raise StoreError(f"cannot copy run {run_id} into {target}: {budget.describe(error)}") from None
    finally:
        connection.close()


def _copy_programs(connection: sqlite3.Connection, run_id: str, imported: _Imported | None) -> None:
    if imported is not None:  # only those checked to be the programs their hashes name
        connection.executemany("INSERT OR IGNORE INTO main.programs VALUES (?, ?, ?)", imported.programs)
        return
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


def _columns(connection: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in connection.execute(f"PRAGMA main.table_info({table})")]
