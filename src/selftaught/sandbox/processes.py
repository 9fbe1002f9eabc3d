"""Starting a child process, two ways: a fresh interpreter per job, or a fork of the preloaded zygote."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from selftaught.sandbox.fork_server import ForkServer

RUNNER = Path(__file__).parent / "child" / "runner.py"
EXIT_GRACE_SECONDS = 2.0


@dataclass
class CappedReader:
    """Drains a pipe to the end, keeping only the first `cap` bytes, so a flood never blocks the child."""

    stream: IO[bytes]
    cap: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        try:
            while chunk := self.stream.read1(65536):  # type: ignore[attr-defined]
                room = self.cap - len(self.data)
                if room > 0:
                    self.data.extend(chunk[:room])
                if len(chunk) > max(room, 0):
                    self.truncated = True
        except (OSError, ValueError):
            pass

    def text(self) -> str:
        self.thread.join(timeout=1.0)
        if not self.thread.is_alive():
            self.stream.close()
        suffix = "\n[output truncated]" if self.truncated else ""
        return self.data.decode("utf-8", errors="replace") + suffix


@dataclass
class ChildProcess:
    """A started child: how to wait for it and kill its process group, and its output."""

    wait: Callable[[float], int | None]
    kill: Callable[[], None]
    stdout: IO[bytes]
    stderr: IO[bytes]

    def reap(self, kill_now: bool) -> int | None:
        """Kills the whole process group, after a short grace period when the child finished its job."""
        exit_code = None if kill_now else self.wait(EXIT_GRACE_SECONDS)
        self.kill()
        return exit_code if exit_code is not None else self.wait(EXIT_GRACE_SECONDS)


def spawn_child(channel: socket.socket, scratch: str, environment: dict[str, str]) -> ChildProcess:
    """A fresh interpreter running the child runner: slow to start, independent of any fork server."""
    process = subprocess.Popen(
        [sys.executable, "-S", "-s", "-B", "-u", str(RUNNER), str(channel.fileno())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(channel.fileno(),),
        cwd=scratch,
        env=environment,
        start_new_session=True,
    )

    def wait(timeout: float) -> int | None:
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    assert process.stdout is not None and process.stderr is not None
    return ChildProcess(wait, kill, process.stdout, process.stderr)


def fork_child(server: ForkServer, channel: socket.socket, scratch: str) -> ChildProcess:
    """A fork of the zygote: the interpreter and numpy are already loaded."""
    stdout_read, stdout_write = os.pipe()
    stderr_read, stderr_write = os.pipe()
    try:
        pid = server.spawn(channel, stdout_write, stderr_write, scratch)
    except BaseException:
        for descriptor in (stdout_read, stderr_read):
            os.close(descriptor)
        raise
    finally:
        os.close(stdout_write)
        os.close(stderr_write)
    return ChildProcess(
        wait=lambda timeout: server.wait(pid, timeout),
        kill=lambda: server.kill(pid),
        stdout=os.fdopen(stdout_read, "rb"),
        stderr=os.fdopen(stderr_read, "rb"),
    )
