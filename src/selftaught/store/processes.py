"""The process a run's record names: the writer notes who runs it, the reader asks whether that one still lives."""

from __future__ import annotations

import os
from pathlib import Path

#: Linux's largest pid (PID_MAX_LIMIT): a recorded pid past it, or below 1, names no process. To `kill`, 0 and
#: negative numbers name process groups, and one past a C int overflows.
MAX_PID = 4_194_304


def process_identity(pid: int) -> str | None:
    """The boot and the start time of process `pid`: unlike the pid, never the same for two processes."""
    if not 0 < pid <= MAX_PID:
        return None
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        started = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None
    return f"{boot}:{started}"


def process_alive(pid: int) -> bool:
    if not 0 < pid <= MAX_PID:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    try:  # a killed process not yet reaped by its parent is a zombie: dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True
