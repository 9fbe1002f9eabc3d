"""cgroup v1 memory and pids limits for all sandboxed children of a host, where the hierarchy is writable (root).

One group per launcher, joined by the fork server (its children inherit it) or by each spawned child:
a hard cap on the children's physical memory (the kernel's OOM killer ends the greediest) and on
their number of processes, whatever their uids. Created below the host's own groups, so the
limits the host lives under still apply.

A host removes its groups when its launcher closes (also on Ctrl-C, SIGTERM or SIGHUP in the CLI).
One killed outright (SIGKILL, the OOM killer) cannot: the next launcher created below the same
groups removes them (`remove_stale_groups`). A group's name says whose it is:
`selftaught-<pid>-<start time>-<launcher>`, the host's pid and the time the kernel started it, so a
pid reused by another process is not taken for the host.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
MEMORY_LIMIT_BYTES = 8 * 1024**3
PROCESS_LIMIT = 512
LIMITS = {
    "memory": {"memory.limit_in_bytes": MEMORY_LIMIT_BYTES},
    "pids": {"pids.max": PROCESS_LIMIT},
}
#: A host's group; groups made before the start time was part of the name lack it.
GROUP_NAME = re.compile(r"selftaught-(?P<pid>[0-9]+)(?:-(?P<started>[0-9]+))?-[0-9a-z]+")
REMOVE_ATTEMPTS = 50
REMOVE_PAUSE_SECONDS = 0.02


class CgroupUnavailable(Exception):
    """The cgroup v1 hierarchy is missing or not writable here; the message says which."""


def _own_group(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    raise CgroupUnavailable(f"no cgroup v1 {controller} controller")


def _parent_folder(controller: str) -> Path:
    """Where this host's groups for `controller` go: below the group it lives in itself."""
    return CGROUP_ROOT / controller / _own_group(controller).lstrip("/")


def process_start_time(pid: int) -> int | None:
    """When the kernel started process `pid` (clock ticks since boot), or None when there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def host_group_name(launcher: str) -> str:
    """The name of the group of this host's launcher `launcher` (any short identifier in [0-9a-z])."""
    pid = os.getpid()
    started = process_start_time(pid)
    # Without the start time (no /proc?) the group is still removed once no process has the pid.
    return f"selftaught-{pid}-{launcher}" if started is None else f"selftaught-{pid}-{started}-{launcher}"


def _host_gone(name: str) -> bool:
    """True when the host that made group `name` is no longer running.

    Assumes hosts sharing a parent group share a pid namespace (pids mean the same to all of them),
    as they do unless one is started inside a container that keeps the parent's cgroups. A group of
    the older naming (no start time) counts as gone only when no process has its pid at all.
    """
    match = GROUP_NAME.fullmatch(name)
    if match is None:
        return False  # not a host's group: not ours to remove
    started = process_start_time(int(match["pid"]))
    if match["started"] is None:
        return started is None
    return started is None or str(started) != match["started"]


def _kill_members(folder: Path) -> None:
    """SIGKILLs every process in the group until none is left (one may fork while others are being killed)."""
    for _ in range(REMOVE_ATTEMPTS):
        try:
            members = [int(pid) for pid in (folder / "cgroup.procs").read_text().split()]
        except OSError:
            return  # removed meanwhile
        if not members:
            return
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(REMOVE_PAUSE_SECONDS)


def _remove_folder(folder: Path) -> bool:
    """Removes an empty group, waiting a moment for its last processes to exit; False if it still has some."""
    for _ in range(REMOVE_ATTEMPTS):
        try:
            os.rmdir(folder)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(REMOVE_PAUSE_SECONDS)  # the last children are still exiting
    return False


def remove_stale_groups() -> list[Path]:
    """Removes the groups that hosts killed outright left below this host's groups; returns those removed.

    Whatever still runs in them is killed first: a child that outlived its host (it should not, it
    dies with its parent) must not keep the group alive. Groups of running hosts are never touched.
    """
    removed: list[Path] = []
    for controller in LIMITS:
        try:
            folders = sorted(_parent_folder(controller).glob("selftaught-*"))
        except (OSError, CgroupUnavailable):
            continue
        for folder in folders:
            if folder.is_dir() and _host_gone(folder.name):
                _kill_members(folder)
                if _remove_folder(folder):
                    removed.append(folder)
    return removed


class ChildrenCgroup:
    """Creates the memory and pids groups; `add(pid)` puts a process (and its future children) in both."""

    def __init__(self, name: str) -> None:
        self.folders: list[Path] = []
        try:
            for controller, limits in LIMITS.items():
                folder = _parent_folder(controller) / name
                folder.mkdir(exist_ok=True)
                self.folders.append(folder)
                for setting, value in limits.items():
                    (folder / setting).write_text(str(value))
        except (OSError, CgroupUnavailable) as error:
            self.remove()
            raise CgroupUnavailable(f"cgroup v1 memory and pids limits unavailable: {error}") from None

    def add(self, pid: int) -> None:
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        """Removes the groups once their processes are gone (a group with processes cannot be removed)."""
        for folder in self.folders:
            _remove_folder(folder)
        self.folders = []

    def describe(self) -> str:
        return f"memory {MEMORY_LIMIT_BYTES // 1024**3} GiB and {PROCESS_LIMIT} processes for all children together"
