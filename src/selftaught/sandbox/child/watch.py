"""Reports what generated code attempts against the sandbox, through a Python audit hook.

The kernel layers (isolation.py) are what stop an attempt; this hook only tells the host that it
happened, so each attempt is recorded against the candidate that made it. Audit hooks cannot be
removed from Python code, and the hook ignores its own sends.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

MAX_REPORTS = 50

NETWORK = {"socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto"}
PROCESSES = {"os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen"}
SIGNALS = {"os.kill", "os.killpg", "signal.pthread_kill"}
INTROSPECTION = {"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames"}
NATIVE = {"ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "mmap.__new__"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def classify(event: str, args: tuple[Any, ...], scratch: str) -> tuple[str, str] | None:
    """(kind, detail) for an event that attempts to leave the sandbox, or None."""
    if event in NETWORK:
        return "network", f"{event}{_short(args)}"
    if event in PROCESSES:
        return "process_spawn", f"{event}{_short(args)}"
    if event in SIGNALS and not (args and args[0] == os.getpid()):
        return "signal", f"{event}{_short(args)}"
    if event in INTROSPECTION:
        return "introspection", event
    if event in NATIVE:
        return "native_code", f"{event}{_short(args)}"
    if event == "open" and args and isinstance(args[0], (str, bytes)):
        path = os.fsdecode(args[0])
        mode, flags = (args[1] if len(args) > 1 else None), (args[2] if len(args) > 2 else 0)
        if path.startswith("/proc/") and not path.startswith(("/proc/self/", "/proc/thread-self/")):
            return "secret_read", f"open {path}"
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
        absolute = os.path.abspath(path)
        if writes and not (absolute == scratch or absolute.startswith(scratch + os.sep)):
            return "file_write", f"open {path} for writing"
    return None


def _short(args: tuple[Any, ...]) -> str:
    return repr(args)[:150]


def install(report: Callable[[str, str], None], scratch: str) -> None:
    """Calls report(kind, detail) for each attempt, at most MAX_REPORTS times."""
    state = threading.local()
    sent = 0

    def hook(event: str, args: tuple[Any, ...]) -> None:
        nonlocal sent
        if sent >= MAX_REPORTS or getattr(state, "busy", False):
            return
        state.busy = True
        try:
            found = classify(event, args, scratch)
            if found is not None:
                sent += 1
                report(*found)
        except Exception:  # a reporting failure must never change what generated code sees
            pass
        finally:
            state.busy = False

    sys.addaudithook(hook)
