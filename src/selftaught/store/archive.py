"""One run as a .tar.gz: its records and its responses, to inspect, resume or replay on another machine.

The archive holds `manifest.json`, `run.sqlite` (a store with only that run) and `cache.sqlite`
(the run's responses under the response cache's keys; `import` files them anew from the run's own
calls, so that `--cache read` finds them too, and takes none of the archive's). A run
on a task folder also has the folder's files under `task/` (see `selftaught.tasks.folder_identity`
for which), which `import` restores beside the store, where `--replay` and `--resume` find them.
An archive is untrusted input: it is read as a stream, member by member, within the size limits
below, and anything but the expected regular files under safe names is refused as it comes; its
SQLite files are checked by `selftaught.store.archive_checks` before a row of them is copied.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import sqlite3
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selftaught import __version__
from selftaught.errors import StoreError
from selftaught.llm.base import ChatMessage, CompletionRequest
from selftaught.llm.cache import ResponseCache, response_key
from selftaught.store.archive_checks import RUN_TABLES, StepBudget, budget_for, check_schema, read_archived_run
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
#: How large each member may be: far above any real run's, far below what fills a disk or the memory.
MAX_MANIFEST_BYTES = 64 * 1024
MAX_RUN_FILE_BYTES = 1024**3
MAX_CACHE_FILE_BYTES = 1024**3
_MEMBER_LIMITS = {
    "manifest.json": MAX_MANIFEST_BYTES,
    "run.sqlite": MAX_RUN_FILE_BYTES,
    "cache.sqlite": MAX_CACHE_FILE_BYTES,
}
MAX_MEMBERS = len(MEMBERS) + MAX_TASK_FILES
#: What one member's headers may take, a long name's among them (tarfile reads them whole, into memory).
MAX_HEADER_BYTES = 64 * 1024
#: The task folder's files are members under this prefix.
TASK_PREFIX = "task/"
_IDENTITY = re.compile(r"[0-9a-f]{64}")
_RUN_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,63}")

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


@dataclass(frozen=True)
class _Imported:
    """What an imported run's rows are copied with: its options as this store keeps them, its checked programs."""

    options: dict[str, Any]
    programs: list[tuple[str, str, str]]
    budget: StepBudget


def import_run(archive_path: Path, store: Path, cache_file: Path) -> ArchiveSummary:
    """Adds the archived run to `store` and its responses to `cache_file`; refuses a run already there.

    Nothing is written before the whole archive is checked. The run's options are kept as
    `selftaught.options.imported_options` rewrites them, and the cache gets the responses of the
    run's own calls, filed as `export` files them: never what the archive's cache.sqlite holds under
    keys of its own, which could answer another request than the one it was recorded for.
    """
    from selftaught.options import imported_options  # it loads the tasks, and numpy: `export` must not

    with tempfile.TemporaryDirectory(prefix="selftaught-import-") as folder:
        staging = Path(folder)
        manifest = _unpack(archive_path, staging)
        run_id = manifest["run_id"]
        _check_schemas(archive_path, staging)
        archived = read_archived_run(f"{archive_path}: its run.sqlite", staging / "run.sqlite", run_id)
        try:
            options = imported_options(archived.run["options"], run_id, archived.run["model"])
        except StoreError as error:
            raise StoreError(f"{archive_path}: {error}") from None
        target = RunStore(store)
        target.close()
        with StoreReader(store) as reader:
            if reader.has_run(run_id):
                raise StoreError(f"run {run_id} is already in {store}")
        entries = _cache_entries(options["cache_identity"], archived.calls)
        task_folder = None
        if manifest.get("task_folder") is not None:
            identity = _checked_task_folder(archive_path, staging, manifest, run_id, options.get("task_hash"))
            task_folder = restored_task_folder(store, identity, manifest["task_folder"]["name"])
            _restore_task_folder(staging / TASK_PREFIX, task_folder, identity)
        imported = _Imported(options, archived.programs, budget_for(staging / "run.sqlite"))
        _copy_run(staging / "run.sqlite", store, run_id, imported)
        cache = ResponseCache(cache_file)
        cache.put(entries)
        cache.close()
    with StoreReader(store) as reader:
        counts = reader.counts(run_id)
    return ArchiveSummary(run_id, counts["lm_calls"], len(entries), counts["evaluations"], task_folder)


def _check_schemas(archive_path: Path, staging: Path) -> None:
    """Its SQLite files must have exactly the schema of those `export` writes: no view, no trigger, nothing else."""
    reference = staging / "reference"
    reference.mkdir()
    RunStore(reference / "run.sqlite").close()
    ResponseCache(reference / "cache.sqlite").close()
    for name in ("run.sqlite", "cache.sqlite"):
        check_schema(f"{archive_path}: its {name}", staging / name, reference / name)


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


def _copy_run(source: Path, target: Path, run_id: str, imported: _Imported | None = None) -> None:
    """Copies one run's rows; improver-run ids are shifted past the target's so they never collide."""
    connection = sqlite3.connect(target, isolation_level=None)
    if imported is not None:
        imported.budget.install(connection)
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
    except sqlite3.Error as error:
        describe = imported.budget.describe if imported is not None else describe_sqlite_error
        raise StoreError(f"cannot copy run {run_id} into {target}: {describe(error)}") from None
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


def _unpack(archive_path: Path, staging: Path) -> dict[str, Any]:
    """Extracts exactly the expected regular files, refusing anything else in the archive as it comes."""
    names: set[str] = set()
    try:
        with gzip.open(archive_path, "rb") as raw:
            stream = _BoundedStream(raw, archive_path)
            with tarfile.open(fileobj=stream, mode="r|") as archive:  # a stream: members are never listed first
                (staging / TASK_PREFIX).mkdir()
                task_bytes = 0
                while (member := archive.next()) is not None:
                    task_bytes += _checked_member(archive_path, member, names, task_bytes)
                    stream.allow(member.size)
                    _extract(archive, member, staging)
    except FileNotFoundError:
        raise StoreError(f"no such archive: {archive_path}") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise StoreError(f"cannot read the archive {archive_path}: {error}") from None
    missing = sorted(set(MEMBERS) - names)
    if missing:
        raise StoreError(f"{archive_path} is not a selftaught run archive (it has no {', '.join(missing)})")
    manifest = _read_manifest(archive_path, staging / "manifest.json")
    _check_task_manifest(archive_path, manifest, any(name.startswith(TASK_PREFIX) for name in names))
    return manifest


class _BoundedStream(io.RawIOBase):
    """The archive's uncompressed bytes, as far as `allow` allows: tarfile reads a member's headers whole (a long
    name's too) before anything can check them, so even those must come within bounds."""

    def __init__(self, raw: io.BufferedIOBase, archive_path: Path) -> None:
        super().__init__()
        self._raw, self._archive_path = raw, archive_path
        self._read, self._limit = 0, MAX_HEADER_BYTES

    def allow(self, size: int) -> None:
        """Allows a member of `size` bytes from here, and the headers of the next one."""
        self._limit = self._read + size + MAX_HEADER_BYTES

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(min(len(view), self._limit - self._read + 1))
        view[: len(data)] = data
        self._read += len(data)
        if self._read > self._limit:
            raise StoreError(f"{self._archive_path}: a member or its header is larger than a run archive's may be")
        return len(data)


def _checked_member(archive_path: Path, member: tarfile.TarInfo, seen: set[str], task_bytes: int) -> int:
    """Refuses a member `import` does not take, before anything of it is read; the bytes it adds to the task folder."""
    name = member.name
    if len(seen) >= MAX_MEMBERS:
        raise StoreError(f"{archive_path}: it holds more than the {MAX_MEMBERS:,} members a run archive may")
    if name in seen:
        raise StoreError(f"{archive_path}: a member appears twice")
    seen.add(name)
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.sparse is not None:
        raise StoreError(f"{archive_path}: {name!r} is not a regular file")
    if not name.startswith(TASK_PREFIX):
        if name not in MEMBERS:
            raise StoreError(f"{archive_path} is not a selftaught run archive (it holds {name[:200]!r})")
        if member.size > _MEMBER_LIMITS[name]:
            raise StoreError(f"{archive_path}: {name} is larger than the {_MEMBER_LIMITS[name]:,} bytes it may have")
        return 0
    if not is_task_file_name(name.removeprefix(TASK_PREFIX)):
        raise StoreError(f"{archive_path}: {name!r} is not a name a task folder's file may have")
    if member.size > MAX_TASK_FILE_BYTES:
        raise StoreError(f"{archive_path}: {name!r} is larger than a task folder's file may be")
    if task_bytes + member.size > MAX_TASK_FOLDER_BYTES:
        raise StoreError(f"{archive_path}: its task folder is larger than a task folder may be")
    return member.size


def _extract(archive: tarfile.TarFile, member: tarfile.TarInfo, staging: Path) -> None:
    extracted = archive.extractfile(member)
    assert extracted is not None
    # Only checked names (no "..", no absolute path) under our own fresh folder, and never over a file.
    target = staging / member.name
    target.parent.mkdir(parents=True, exist_ok=True)
    with extracted, target.open("xb") as written:
        while chunk := extracted.read(io.DEFAULT_BUFFER_SIZE * 16):
            written.write(chunk)


def _read_manifest(archive_path: Path, path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise StoreError(f"{archive_path}: manifest.json is unreadable: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT or "run_id" not in manifest:
        raise StoreError(f"{archive_path}: unknown archive format (made by a different selftaught version?)")
    if not (isinstance(manifest["run_id"], str) and _RUN_ID.fullmatch(manifest["run_id"])):
        raise StoreError(f"{archive_path}: its manifest names no run id selftaught makes")
    return manifest


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
