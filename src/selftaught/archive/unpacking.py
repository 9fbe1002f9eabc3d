"""Reading a run archive someone else made: exactly the members `export` writes, streamed within size limits.

The archive is read as a stream, member by member (never listed first), and anything but the
expected regular files under safe names is refused as it comes, before it is unpacked; its
manifest must describe the run and its task folder as `export` writes them.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import zlib
from pathlib import Path
from typing import Any

from selftaught.errors import StoreError
from selftaught.tasks.folder_identity import (
    MAX_TASK_FILE_BYTES,
    MAX_TASK_FILES,
    MAX_TASK_FOLDER_BYTES,
    is_folder_name,
    is_task_file_name,
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


def unpack(archive_path: Path, staging: Path) -> dict[str, Any]:
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
