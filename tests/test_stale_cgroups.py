"""The cgroups of hosts killed outright are removed by the next launcher; those of running hosts never are."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from conftest import cgroup_parents, cgroup_v1_missing
from selftaught.sandbox.cgroups import host_group_name, process_start_time, remove_stale_groups
from selftaught.sandbox.launcher import Launcher

pytestmark = pytest.mark.skipif(cgroup_v1_missing() is not None, reason=str(cgroup_v1_missing()))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_start_time(child.pid) is None
    return child.pid


@pytest.fixture
def made_groups() -> Iterator[list[str]]:
    """Names of groups a test makes by hand; whatever of them is left is removed afterwards."""
    names: list[str] = []
    yield names
    for parent in cgroup_parents():
        for name in names:
            if (parent / name).is_dir():
                os.rmdir(parent / name)


def make_group(name: str, made: list[str]) -> None:
    made.append(name)
    for parent in cgroup_parents():
        (parent / name).mkdir()


def test_groups_of_dead_hosts_are_removed_with_their_processes_and_live_ones_stay(made_groups: list[str]) -> None:
    gone = dead_pid()
    stale = {
        f"selftaught-{gone}-12345-a1": "its host's pid is unused",
        f"selftaught-{os.getpid()}-1-a2": "its host's pid was reused by a process started later (this one)",
        f"selftaught-{gone}-7f00aa": "the older naming, its host's pid unused",
    }
    live = {
        host_group_name("b1"): "this process's own",
        f"selftaught-{os.getpid()}-7f00bb": "the older naming with a pid in use: it may be a running host",
        "selftaught-notes": "not a host's group",
    }
    for name in [*stale, *live]:
        make_group(name, made_groups)
    # A child that outlived its host, holding the stale group: it is killed, or the group could not go.
    holder = subprocess.Popen(["sleep", "60"])
    try:
        for parent in cgroup_parents():
            (parent / f"selftaught-{gone}-12345-a1" / "cgroup.procs").write_text(str(holder.pid))
        removed = remove_stale_groups()
        assert holder.wait(timeout=5) == -9
    finally:
        holder.kill()
    for parent in cgroup_parents():
        for name, why in stale.items():
            assert not (parent / name).exists(), f"{parent / name} stayed: {why}"
            assert parent / name in removed
        for name, why in live.items():
            assert (parent / name).is_dir(), f"{parent / name} was removed: {why}"


def test_a_new_launcher_leaves_the_groups_of_a_running_one_alone() -> None:
    first = Launcher()
    try:
        assert first._cgroup is not None, first.cgroup_problem
        first.start()  # its fork server is in its groups
        folders = list(first._cgroup.folders)
        assert [folder.parent for folder in folders] == cgroup_parents()
        assert all(
            folder.name.startswith(f"selftaught-{os.getpid()}-{process_start_time(os.getpid())}-") for folder in folders
        )
        second = Launcher()
        second.close()
        assert all(folder.is_dir() for folder in folders)
        assert all((folder / "cgroup.procs").read_text().split() for folder in folders)
    finally:
        first.close()
    assert not any(folder.exists() for folder in folders)
