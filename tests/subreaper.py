"""Runs a command as the child of a subreaper and reports every process the command left behind.

`python subreaper.py REPORT SETTLE_SECONDS COMMAND...`: orphans of the command's process tree are
reparented to this process instead of init, so once the command has exited and SETTLE_SECONDS have
passed, this process's children are exactly what the command's tree left: alive, or dead but not
reaped by anyone (zombies). While the command runs, its process tree is sampled, to tell the
command's own children (which it must reap itself) from deeper descendants orphaned by their own
parents. Writes to REPORT, as JSON:
  {"exit_code": N, "seen": [{"pid", "parent", "state", "command"}...], "left": [{"pid", "state",
   "command", "child_of_command", "was"}...]}
then kills and reaps whatever was left, so that nothing outlives the test.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PR_SET_CHILD_SUBREAPER = 36
SAMPLE_SECONDS = 0.02


def children_of(pid: int) -> list[int]:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    found = []
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def identity(pid: int) -> tuple[int, str] | None:
    """The pid with its start time: two processes never share both."""
    try:
        return pid, Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def describe(pid: int) -> dict[str, Any]:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        state, command = "gone", ""
    return {"pid": pid, "state": state, "command": command[:300]}


def sample_tree(root: int, seen: dict[tuple[int, str], dict[str, Any]]) -> None:
    """Adds every process now below `root` to `seen`, keyed by identity, with its parent."""
    parents = [root]
    while parents:
        parent = parents.pop()
        for child in children_of(parent):
            key = identity(child)
            if key is not None and key not in seen:
                seen[key] = {**describe(child), "parent": parent}
            parents.append(child)


def main() -> None:
    report, settle_seconds, command = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    process = subprocess.Popen(command)
    seen: dict[tuple[int, str], dict[str, Any]] = {}
    while process.poll() is None:
        sample_tree(process.pid, seen)
        time.sleep(SAMPLE_SECONDS)
    time.sleep(settle_seconds)
    left = []
    for pid in children_of(os.getpid()):
        sampled = seen.get(identity(pid) or (pid, ""), {})
        # A zombie has no command line left: the one sampled while it ran says what it was.
        was = {"child_of_command": sampled.get("parent") == process.pid, "was": sampled.get("command", "")}
        left.append({**describe(pid), **was})
    report.write_text(json.dumps({"exit_code": process.returncode, "seen": list(seen.values()), "left": left}))
    for entry in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(entry["pid"], signal.SIGKILL)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break


if __name__ == "__main__":
    main()
