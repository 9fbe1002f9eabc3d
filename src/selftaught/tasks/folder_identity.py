"""What a task folder is made of, its identity (a hash of its files) and where a run finds it again.

A run on a task folder records the folder's path and identity. `export` packs the same files;
`import` restores them beside the store, under `tasks/<identity>/<folder name>/`; `--replay` and
`--resume` run only on a folder with the recorded identity: the recorded path, the restored copy,
or a folder the user names.

The files are every regular file under the folder, except hidden ones (a name starting with ".",
such as `.git`), `__pycache__` folders and `*.pyc` files, which are not part of a task. A link is
followed only when it leads to a file inside the folder; a link out of it, a linked folder and a
file over `MAX_TASK_FILE_BYTES` are left out (`skipped` says which and why). A folder with more
than `MAX_TASK_FILES` files or `MAX_TASK_FOLDER_BYTES` in them is refused: a task folder holds a
task's code and small data, not a data set.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Not the loader's TaskFolderError: its module loads numpy, which `export`, a command that only reads, must not.
from selftaught.errors import SelftaughtError, UnknownTask

MAX_TASK_FILE_BYTES = 16 * 1024**2
MAX_TASK_FOLDER_BYTES = 256 * 1024**2
MAX_TASK_FILES = 10_000
#: The files the loader reads: a copy without one of them (that the folder has) cannot run the task.
LOADER_FILES = ("seed.py", "task.py", "task.toml")
#: Beside the store: restored task folders, one per identity.
RESTORED_TASKS = "tasks"
_MAX_NAME_CHARACTERS = 255


@dataclass(frozen=True)
class TaskFolderFiles:
    folder: Path
    #: (name relative to the folder, in POSIX form; the file to read), sorted by name.
    files: tuple[tuple[str, Path], ...]
    #: What was left out: (its name, why).
    skipped: tuple[tuple[str, str], ...]

    def skipped_messages(self) -> tuple[str, ...]:
        return tuple(f"{name}: {why}" for name, why in self.skipped)


def is_task_file_name(name: str) -> bool:
    """A relative name a task folder's file may have: no hidden part, no cache, nothing leading out of it."""
    if not name or len(name) > 4096 or "\\" in name or "\x00" in name or not _is_utf8(name):
        return False
    path = PurePosixPath(name)
    if path.is_absolute() or path.as_posix() != name:  # also refuses "a//b", "./a" and a trailing "/"
        return False
    return all(_kept(part) and len(part) <= _MAX_NAME_CHARACTERS for part in path.parts) and not name.endswith(".pyc")


def is_folder_name(name: str) -> bool:
    """A single folder name that stays where it is put."""
    return is_task_file_name(name) and "/" not in name


def task_folder_files(folder: Path) -> TaskFolderFiles:
    """The files that make up the task in `folder`; see the module's docstring for which."""
    if not folder.is_dir():
        raise UnknownTask(f"{folder}: no such task folder")
    root = folder.resolve()
    files: list[tuple[str, Path]] = []
    skipped: list[tuple[str, str]] = []
    total = 0
    # followlinks=False: a linked folder is listed but never entered, so nothing outside is walked.
    for directory, subfolders, names in os.walk(root):
        here = Path(directory)
        for name in [name for name in subfolders if (here / name).is_symlink()]:
            skipped.append(((here / name).relative_to(root).as_posix(), "a link to a folder"))
        subfolders[:] = sorted(name for name in subfolders if _kept(name) and not (here / name).is_symlink())
        for name in sorted(names):
            relative = (here / name).relative_to(root).as_posix()
            if not _kept(name) or name.endswith(".pyc"):
                continue
            if not is_task_file_name(relative):
                skipped.append((repr(relative), "a name an archive cannot hold"))
                continue
            source, problem = _readable_file(here / name, root)
            if problem is not None:
                skipped.append((relative, problem))
                continue
            assert source is not None
            files.append((relative, source))
            total += source.stat().st_size
            if len(files) > MAX_TASK_FILES or total > MAX_TASK_FOLDER_BYTES:
                raise UnknownTask(
                    f"{folder}: a task folder holds at most {MAX_TASK_FILES:,} files and "
                    f"{MAX_TASK_FOLDER_BYTES // 1024**2} MiB; keep larger data outside it"
                )
    return TaskFolderFiles(folder, tuple(sorted(files)), tuple(skipped))


def task_folder_identity(folder: Path) -> str:
    """The SHA-256 of the folder's files, names and contents: equal exactly when they are."""
    return files_identity(task_folder_files(folder).files)


def files_identity(files: tuple[tuple[str, Path], ...]) -> str:
    return contents_identity((name, _file_digest(path)) for name, path in files)


def contents_identity(digests: Iterable[tuple[str, str]]) -> str:
    """The identity of files given as (name, SHA-256 of the content)."""
    digest = hashlib.sha256()
    for name, content_digest in sorted(digests):
        digest.update(name.encode() + b"\x00" + content_digest.encode() + b"\n")
    return digest.hexdigest()


def restored_task_folder(store: Path, identity: str, name: str) -> Path:
    """Where `import` puts a task folder, beside the store; the folder keeps its name, the task's name."""
    if not is_folder_name(name):
        name = "task"
    return store.parent / RESTORED_TASKS / identity[:16] / name


def locate_task_folder(
    recorded: str,
    identity: str | None,
    store: Path,
    run_id: str,
    given: str | None,
    hint: str = "give --task PATH (task= in Python) for a folder with the files it recorded",
) -> str:
    """The folder to rerun a run's task in: `given`, else the recorded path, else the copy `import` restored.

    Refuses a folder whose files differ from those the run recorded; a run recorded before
    identities were has nothing to compare with and takes the folder as it is. `hint` ends the
    message that no folder has the recorded files.
    """
    if given is not None:
        if not Path(given).is_dir():
            raise SelftaughtError(f"{given}: no such task folder")
        if identity is not None and identity_or_none(Path(given)) != identity:
            raise SelftaughtError(
                f"{given} is not the task folder run {run_id} ran on: its files differ from those the run recorded"
            )
        return str(Path(given).resolve())
    if identity is None:
        return recorded
    if identity_or_none(Path(recorded)) == identity:
        return recorded
    restored = restored_task_folder(store, identity, Path(recorded).name)
    if identity_or_none(restored) == identity:
        return str(restored)
    if Path(recorded).is_dir():
        raise SelftaughtError(
            f"the task folder {recorded} changed since run {run_id} ran on it (its files differ from those the run "
            f"recorded); restore them, or {hint}"
        )
    raise SelftaughtError(
        f"run {run_id} ran on the task folder {recorded}, which is gone; import the run's archive "
        f"(selftaught import FILE) to restore it, or {hint}"
    )


def identity_or_none(folder: Path) -> str | None:
    """The folder's identity, or None when it is missing or cannot be a task folder."""
    try:
        return task_folder_identity(folder)
    except (SelftaughtError, OSError):
        return None


def _is_utf8(name: str) -> bool:
    # A file name that is not UTF-8 comes as surrogate escapes (os.listdir, tarfile): no identity or archive holds it.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kept(name: str) -> bool:
    return not name.startswith(".") and name != "__pycache__" and name != ""


def _readable_file(path: Path, root: Path) -> tuple[Path | None, str | None]:
    """The regular file to read for `path` (a link inside the folder leads to its target), or why it is left out."""
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(root):
            return None, "a link out of the task folder"
        path = target
    try:
        status = path.stat()
    except OSError as error:
        return None, f"unreadable ({error.strerror})"
    if not stat.S_ISREG(status.st_mode):
        return None, "not a regular file"
    if status.st_size > MAX_TASK_FILE_BYTES:
        return None, f"larger than the {MAX_TASK_FILE_BYTES // 1024**2} MiB a task folder's file may have"
    return path, None


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as opened:
        while chunk := opened.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
