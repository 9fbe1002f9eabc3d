"""Starting a child process, two ways: a fresh interpreter per job, or a fork of the preloaded zygote."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selftaught.sandbox.fork_server import ForkServer

RUNNER = Path(__file__).parent / "child" / "runner.py"
EXIT_GRACE_SECONDS = 2.0
#: Longest a removal of what a child left behind may take before the host gives up on it.
REMOVAL_SECONDS = 60.0


def remove_folder(path: str, settle: Callable[[], object] = lambda: None) -> None:
    """Removes a folder a child wrote in, however it shaped it; never raises.

    shutil.rmtree recurses, so a tree thousands of folders deep (made with dir_fd, say) ends it with a
    RecursionError: `rm -rf` (which does not recurse on the stack) then removes what is left, once
    `settle` has returned (it waits for the child to be gone: nothing then moves under the removal).
    """
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except (OSError, RecursionError):
        pass
    with contextlib.suppress(Exception):
        settle()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            ["rm", "-rf", "--one-file-system", "--", path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=REMOVAL_SECONDS,
            check=False,
        )


class OutputFile:
    """The child's stdout and stderr, written to a file in its scratch directory and read back with a cap.

    No reader threads and no pipes to drain: the file-size limit bounds a flood, and the host reads
    through its own descriptor, so whatever the child renames or replaces, it reads what was written.
    """

    NAME = ".output"

    def __init__(self, scratch: str) -> None:
        path = os.path.join(scratch, self.NAME)
        self.write_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._read_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def close_writer(self) -> None:
        os.close(self.write_fd)

    def read(self, cap: int) -> tuple[str, bool]:
        """The first `cap` bytes as text, and whether there was more."""
        try:
            data = os.pread(self._read_fd, cap + 1, 0)
        finally:
            os.close(self._read_fd)
        truncated = len(data) > cap
        text = data[:cap].decode("utf-8", errors="replace")
        return (text + "\n[output truncated]" if truncated else text), truncated


@dataclass(eq=False)
class ChildProcess:
    """A started child: how to wait for it and kill its process group, and its output."""

    wait: Callable[[float], int | None]
    kill: Callable[[], None]
    #: The pid in the host's namespace, when the host started the process itself.
    host_pid: int | None = None

    def end(self, explain: bool) -> int | None:
        """Kills the whole process group, whatever the child says it is doing; with `explain`, its exit code.

        The exit code only matters when the job gave no result: a signal then says why (the CPU limit,
        a crash).
        """
        self.kill()
        # A child that had already died keeps its own cause (SIGXCPU, say): killing a dead process changes nothing.
        return self.wait(EXIT_GRACE_SECONDS) if explain else None


def spawn_child(channel: socket.socket, scratch: str, output: OutputFile, environment: dict[str, str]) -> ChildProcess:
    """A fresh interpreter running the child runner: slow to start, independent of any fork server."""
    process = subprocess.Popen(
        [sys.executable, "-S", "-s", "-B", "-u", str(RUNNER), str(channel.fileno())],
        stdin=subprocess.DEVNULL,
        stdout=output.write_fd,
        stderr=subprocess.STDOUT,
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

    return ChildProcess(wait, kill, host_pid=process.pid)


def fork_child(server: ForkServer, channel: socket.socket, scratch: str, output: OutputFile) -> ChildProcess:
    """A fork of the zygote: the interpreter and numpy are already loaded."""
    job = server.spawn(channel, output.write_fd, scratch)
    return ChildProcess(wait=lambda timeout: server.wait(job, timeout), kill=lambda: server.kill(job))
