"""cgroup v1 memory and pids limits for all sandboxed children of a host, where the hierarchy is writable (root).

One group per host, joined by the fork server (its children inherit it) or by each spawned child:
a hard cap on the children's physical memory (the kernel's OOM killer ends the greediest) and on
their number of processes, whatever their uids. Created below the host's own groups, so the
limits the host lives under still apply.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
MEMORY_LIMIT_BYTES = 8 * 1024**3
PROCESS_LIMIT = 512


class CgroupUnavailable(Exception):
    """The cgroup v1 hierarchy is missing or not writable here; the message says which."""


def _own_group(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    raise CgroupUnavailable(f"no cgroup v1 {controller} controller")


class ChildrenCgroup:
    """Creates the memory and pids groups; `add(pid)` puts a process (and its future children) in both."""

    def __init__(self, name: str) -> None:
        self.folders: list[Path] = []
        try:
            for controller, limits in (
                ("memory", {"memory.limit_in_bytes": MEMORY_LIMIT_BYTES}),
                ("pids", {"pids.max": PROCESS_LIMIT}),
            ):
                folder = CGROUP_ROOT / controller / _own_group(controller).lstrip("/") / name
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
            for _ in range(50):
                try:
                    os.rmdir(folder)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # the last children are still exiting
        self.folders = []

    def describe(self) -> str:
        return f"memory {MEMORY_LIMIT_BYTES // 1024**3} GiB and {PROCESS_LIMIT} processes for all children together"
