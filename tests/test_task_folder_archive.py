"""A run on a task folder travels with its folder: export packs it, import restores it, replay checks it."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from conftest import NEAREST_NEIGHBOUR, TSP_EXAMPLE, fenced
from selftaught import api
from selftaught.cli.main import cli
from selftaught.errors import SelftaughtError
from selftaught.tasks.folder_identity import MAX_TASK_FILE_BYTES, task_folder_files, task_folder_identity

RUN_FLAGS = (
    "--iterations", "1", "--lm-calls", "1", "--responses-per-call", "2", "--meta-utility-runs", "2",
    "--meta-utility-budget", "2", "--utility-budget", "2", "--seed", "3", "--workers", "2", "--json",
)  # fmt: skip
SMALL_SPLITS = "time_limit_seconds = 1.0\n[splits.validation]\nbase_seed = 100\ncount = 3\n[splits.test]\nbase_seed = 200\ncount = 3\n"


def invoke(*arguments: str) -> Result:
    return CliRunner().invoke(cli, list(arguments), catch_exceptions=False)


def make_task_folder(where: Path) -> Path:
    """The TSP example with small splits, a data file of its own and what an export leaves out."""
    folder = where / "tsp"
    shutil.copytree(TSP_EXAMPLE, folder)
    (folder / "task.toml").write_text(SMALL_SPLITS)
    (folder / "data").mkdir()
    (folder / "data" / "notes.txt").write_text("read by nobody, packed all the same\n")
    (folder / ".secret").write_text("hidden files are not part of a task\n")
    (where / "outside.txt").write_text("not in the folder\n")
    (folder / "outside_link.txt").symlink_to(where / "outside.txt")
    (folder / "inside_link.txt").symlink_to(Path("data") / "notes.txt")  # relative: it moves with the folder
    with (folder / "big.bin").open("wb") as big:
        big.truncate(MAX_TASK_FILE_BYTES + 1)  # sparse: over the limit without writing it
    return folder


def run_on(folder: Path, store: Path, model: str) -> dict[str, Any]:
    result = invoke("run", "--task", str(folder), "--model", model, "--store", str(store), *RUN_FLAGS)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def scores(store: Path, run_id: str) -> Counter[tuple[Any, ...]]:
    connection = sqlite3.connect(store)
    rows = connection.execute(
        "SELECT solution_hash, task, split, score, instances, invalid FROM evaluations WHERE run_id = ?", (run_id,)
    )
    counted = Counter(tuple(row) for row in rows)
    connection.close()
    return counted


def replay(store: Path, run_id: str, *extra: str) -> Result:
    return invoke("run", "--replay", run_id, "--store", str(store), "--json", *extra)


@pytest.fixture
def recorded(tmp_path: Path, scripted_model: Callable[..., str]) -> tuple[Path, Path, dict[str, Any]]:
    folder = make_task_folder(tmp_path / "mine")
    store = tmp_path / "here" / "runs.sqlite"
    return folder, store, run_on(folder, store, scripted_model(f"return {fenced(NEAREST_NEIGHBOUR)!r}"))


@pytest.mark.slow
def test_export_delete_import_and_replay_gives_identical_scores(
    recorded: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    folder, store, report = recorded
    archive = tmp_path / "run.tar.gz"
    exported = CliRunner().invoke(cli, ["export", report["run_id"], "-o", str(archive), "--store", str(store)])
    assert exported.exit_code == 0, exported.output
    assert "outside_link.txt: a link out of the task folder" in exported.stderr
    assert "big.bin: larger than the 16 MiB" in exported.stderr
    with tarfile.open(archive) as opened:
        names = sorted(opened.getnames())
    assert names == [
        "cache.sqlite", "manifest.json", "run.sqlite", "task/README.md", "task/data/notes.txt", "task/inside_link.txt",
        "task/seed.py", "task/task.py", "task/task.toml",
    ]  # fmt: skip

    shutil.rmtree(folder)
    elsewhere = tmp_path / "elsewhere" / "runs.sqlite"
    imported = invoke("import", str(archive), "--store", str(elsewhere), "--json")
    assert imported.exit_code == 0, imported.output
    restored = Path(json.loads(imported.stdout)["task_folder"])
    assert restored.parent.parent == elsewhere.parent / "tasks" and restored.name == "tsp"
    assert (restored / "inside_link.txt").read_text() == (restored / "data" / "notes.txt").read_text()
    assert not (restored / "inside_link.txt").is_symlink()

    replayed = replay(elsewhere, report["run_id"])
    assert replayed.exit_code == 0, replayed.output
    again = json.loads(replayed.stdout)
    assert again["iterations"] == report["iterations"] and again["final_improver"] == report["final_improver"]
    assert scores(elsewhere, again["run_id"]) == scores(store, report["run_id"])

    # The imported run exports again, with the restored folder, and the same files.
    second = tmp_path / "again.tar.gz"
    assert invoke("export", report["run_id"], "-o", str(second), "--store", str(elsewhere)).exit_code == 0
    with tarfile.open(second) as opened:
        assert sorted(opened.getnames()) == names


@pytest.mark.slow
def test_replay_takes_task_for_a_moved_folder_and_refuses_a_changed_one(
    recorded: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    folder, store, report = recorded
    moved = tmp_path / "moved" / "tsp"
    moved.parent.mkdir()
    folder.rename(moved)
    gone = replay(store, report["run_id"])
    assert gone.exit_code == 2 and "which is gone" in gone.stderr and "--task PATH" in gone.stderr
    found = replay(store, report["run_id"], "--task", str(moved))
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["iterations"] == report["iterations"]
    from_python = api.replay(report["run_id"], store, task=str(moved))
    assert [it.meta_utility_val for it in from_python.iterations] == [
        it["meta_utility_val"] for it in report["iterations"]
    ]

    with (moved / "task.py").open("a") as task_py:
        task_py.write("\n# edited after the run\n")
    changed = replay(store, report["run_id"], "--task", str(moved))
    assert changed.exit_code == 2 and "its files differ from those the run recorded" in changed.stderr
    moved.rename(folder)
    changed_in_place = replay(store, report["run_id"])
    assert changed_in_place.exit_code == 2 and f"the task folder {folder} changed since" in changed_in_place.stderr
    # A run that stopped does not resume on a changed folder either.
    with sqlite3.connect(store) as connection:
        connection.execute("UPDATE runs SET status = 'interrupted' WHERE id = ?", (report["run_id"],))
    connection.close()
    with pytest.raises(SelftaughtError, match="changed since"):
        api.resume(report["run_id"], store)
    not_exported = invoke("export", report["run_id"], "-o", str(tmp_path / "x.tar.gz"), "--store", str(store))
    assert not_exported.exit_code == 2 and "changed since" in not_exported.stderr
    assert not (tmp_path / "x.tar.gz").exists()


@pytest.mark.slow
def test_replay_refuses_a_task_for_a_run_on_a_built_in_task(tmp_path: Path, scripted_model: Callable[..., str]) -> None:
    store = tmp_path / "runs.sqlite"
    model = scripted_model("return 'no code'")
    result = invoke("run", "--model", model, "--store", str(store), *RUN_FLAGS, "--iterations", "0")
    assert result.exit_code == 0, result.output
    refused = replay(store, json.loads(result.stdout)["run_id"], "--task", str(TSP_EXAMPLE))
    assert refused.exit_code == 2 and "ran the built-in task parity_noise" in refused.stderr


def regular(name: str, content: bytes) -> tuple[tarfile.TarInfo, bytes]:
    member = tarfile.TarInfo(name)
    member.size = len(content)
    return member, content


def special(name: str, kind: bytes, target: str = "") -> tuple[tarfile.TarInfo, bytes]:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, target
    return member, b""


NOT_A_FILE, BAD_NAME = "is not a regular file", "is not a name a task folder's file may have"
HOSTILE: dict[str, tuple[Callable[[], tuple[tarfile.TarInfo, bytes]], str]] = {
    "traversal": (lambda: regular("task/../../evil.py", b"evil"), BAD_NAME),
    "traversal_inside": (lambda: regular("task/data/../../evil.py", b"evil"), BAD_NAME),
    "absolute": (lambda: regular("/tmp/evil.py", b"evil"), "not a selftaught run archive"),
    "absolute_under_task": (lambda: regular("task//evil.py", b"evil"), BAD_NAME),
    "hidden": (lambda: regular("task/.evil.py", b"evil"), BAD_NAME),
    # Not UTF-8: tarfile reads the name as surrogate escapes, which no identity or folder listing can hold.
    "not_utf8": (lambda: regular("task/\udcff.py", b"evil"), BAD_NAME),
    "symlink": (lambda: special("task/evil.py", tarfile.SYMTYPE, "/etc/passwd"), NOT_A_FILE),
    "hardlink": (lambda: special("task/evil.py", tarfile.LNKTYPE, "task/seed.py"), NOT_A_FILE),
    "device": (lambda: special("task/evil.py", tarfile.CHRTYPE), NOT_A_FILE),
    "fifo": (lambda: special("task/evil.py", tarfile.FIFOTYPE), NOT_A_FILE),
    "directory": (lambda: special("task/evil", tarfile.DIRTYPE), NOT_A_FILE),
    "duplicate": (lambda: regular("task/seed.py", b"def algorithm(cities):\n    return []\n"), "appears twice"),
    # A file the run did not have: the folder is no longer the one its manifest names.
    "extra": (lambda: regular("task/evil.py", b"evil"), "not those its manifest names"),
    "too_large": (lambda: regular("task/evil.bin", bytes(MAX_TASK_FILE_BYTES + 1)), "larger than a task folder's file"),
}


@pytest.mark.slow
@pytest.mark.parametrize("hostility", sorted(HOSTILE))
def test_import_refuses_hostile_task_members(
    hostility: str, recorded: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, store, report = recorded
    archive = tmp_path / "run.tar.gz"
    assert invoke("export", report["run_id"], "-o", str(archive), "--store", str(store)).exit_code == 0
    hostile = tmp_path / "hostile.tar.gz"
    with tarfile.open(archive) as original, tarfile.open(hostile, "w:gz") as written:
        assert "task/seed.py" in original.getnames()  # what import takes, so the refusal is the hostile member's
        for member in original.getmembers():
            written.addfile(member, original.extractfile(member))
        make_member, reason = HOSTILE[hostility]
        member, content = make_member()
        written.addfile(member, io.BytesIO(content) if member.isfile() else None)
    before = set(files_under(tmp_path))
    elsewhere = tmp_path / "elsewhere" / "runs.sqlite"
    refused = invoke("import", str(hostile), "--store", str(elsewhere))
    assert refused.exit_code == 2 and reason in refused.stderr, refused.output
    assert set(files_under(tmp_path)) == before and not elsewhere.parent.exists()  # a refused archive writes nothing
    for place in (Path(tempfile.gettempdir()), tmp_path, elsewhere.parent, Path("/")):
        assert not (place / "evil.py").exists()


@pytest.mark.slow
def test_import_refuses_a_task_folder_its_run_did_not_record(
    recorded: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, store, report = recorded
    archive = tmp_path / "run.tar.gz"
    assert invoke("export", report["run_id"], "-o", str(archive), "--store", str(store)).exit_code == 0
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(archive) as original, tarfile.open(tampered, "w:gz") as written:
        for member in original.getmembers():
            content = original.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "task/task.py":
                content += b"\nprint('also this')\n"
            elif member.name == "manifest.json":
                manifest = json.loads(content)
                manifest["task_folder"]["hash"] = "0" * 64
                content = json.dumps(manifest).encode()
            member.size = len(content)
            written.addfile(member, io.BytesIO(content))
    refused = invoke("import", str(tampered), "--store", str(tmp_path / "elsewhere" / "runs.sqlite"))
    assert refused.exit_code == 2 and "not those its manifest names" in refused.stderr
    assert not (tmp_path / "elsewhere").exists()  # checked before the store or its task folder is made


def files_under(root: Path) -> list[Path]:
    found: list[Path] = []
    for directory, _, names in os.walk(root):
        found.extend(Path(directory) / name for name in names)
    return found


def test_a_file_name_that_is_not_utf8_is_left_out_of_a_task_folder(tmp_path: Path) -> None:
    folder = tmp_path / "tsp"
    shutil.copytree(TSP_EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    identity = task_folder_identity(folder)
    name = os.fsdecode(b"notes\xff.txt")
    (folder / name).write_text("a name only bytes can spell\n")
    files = task_folder_files(folder)
    assert files.skipped == ((repr(name), "a name an archive cannot hold"),)
    assert name not in dict(files.files) and task_folder_identity(folder) == identity
