"""Host side of the fork server: starts the zygote once, asks it for one child per job, learns how children exit.

A reader thread takes the zygote's messages apart: answers to spawn requests (in order) and exit
statuses (any time). Spawning is serialized; waiting and killing are not.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

from selftaught.errors import SandboxError
from selftaught.sandbox.child import protocol

ZYGOTE = Path(__file__).parent / "child" / "zygote.py"
START_TIMEOUT_SECONDS = 30.0


def _last_descendant(pid: int) -> int:
    """The deepest process below `pid` along first children: bwrap's sandboxed child, the zygote."""
    while True:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return pid
        if not children:
            return pid
        pid = int(children[0])


class ForkServer:
    def __init__(self, environment: dict[str, str], package_paths: list[str], bwrap_prefix: list[str]) -> None:
        host_end, zygote_end = socket.socketpair()
        network = "isolated" if bwrap_prefix else "unshare"
        self._process = subprocess.Popen(
            [
                *bwrap_prefix,
                sys.executable,
                "-S",
                "-s",
                "-B",
                "-u",
                str(ZYGOTE),
                str(zygote_end.fileno()),
                network,
                *package_paths,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(zygote_end.fileno(),),
            env=environment,
            cwd="/",
            start_new_session=True,
        )
        zygote_end.close()
        self._control = host_end
        self._spawn_lock = threading.Lock()
        # Answers to spawn requests arrive in request order; each request waits on its own future.
        self._spawned: collections.deque[Future[int]] = collections.deque()
        self._exits: dict[int, int] = {}
        self._cached: set[str] = set()
        self._exited = threading.Condition()
        self._alive = True
        self._control.settimeout(START_TIMEOUT_SECONDS)
        try:
            ready = protocol.receive_message(self._control)
        except (OSError, protocol.ProtocolError) as error:
            stderr = self._process.stderr.read().decode(errors="replace")[-500:] if self._process.stderr else ""
            self._process.kill()
            raise SandboxError(f"the fork server did not start: {error} {stderr}".strip()) from None
        if ready.get("kind") != "ready":
            raise SandboxError("the fork server sent an unexpected greeting")
        #: The zygote's pid as the host sees it (bwrap, when used, stands between them).
        self.pid = _last_descendant(self._process.pid) if bwrap_prefix else self._process.pid
        #: True when the zygote sits in an empty network namespace that every child inherits.
        self.network_isolated = ready.get("network") == "isolated"
        self._control.settimeout(None)
        self._reader = threading.Thread(target=self._read, name="fork-server-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                message = protocol.receive_message(self._control)
                if message["kind"] == "spawned":
                    self._spawned.popleft().set_result(int(message["pid"]))
                elif message["kind"] == "exited":
                    with self._exited:
                        self._exits[int(message["pid"])] = int(message["status"])
                        self._exited.notify_all()
        except (OSError, protocol.ProtocolError, IndexError):
            with self._exited:
                self._alive = False
                self._exited.notify_all()
            for pending in self._spawned:
                pending.set_exception(SandboxError("the fork server has stopped"))

    def spawn(self, channel: socket.socket, output_fd: int, scratch: str) -> Future[int]:
        """Asks for a child serving the job on `channel`; its pid (in the zygote's namespace) arrives later.

        The host need not wait for the fork: the child reads its job whenever it is ready.
        """
        pid: Future[int] = Future()
        with self._spawn_lock:
            if not self._alive:
                raise SandboxError("the fork server has stopped")
            self._spawned.append(pid)
            frame = protocol.frame({"kind": "spawn", "scratch": scratch})
            socket.send_fds(self._control, [frame], [channel.fileno(), output_fd])
        return pid

    def cache_instances(self, key: str, instances: protocol.RawJSON) -> None:
        """Has the zygote decode task instances once; children then find them in memory by `key`."""
        with self._spawn_lock:
            if key not in self._cached:
                protocol.send_message(self._control, {"kind": "instances", "key": key, "instances": instances})
                self._cached.add(key)

    def wait(self, pid: int, timeout: float) -> int | None:
        """The child's exit code (negative for a signal), or None if it is still running after `timeout`."""
        with self._exited:
            self._exited.wait_for(lambda: pid in self._exits or not self._alive, timeout=timeout)
            return self._exits.pop(pid, None)

    def kill(self, pid: int) -> None:
        """Kills the child's whole process group."""
        with self._spawn_lock:
            if self._alive:
                with contextlib.suppress(OSError):
                    protocol.send_message(self._control, {"kind": "kill", "pid": pid})

    def close(self) -> None:
        self._alive = False
        # shutdown, not just close: the reader thread still holds the socket, and the zygote must see EOF now.
        with contextlib.suppress(OSError):
            self._control.shutdown(socket.SHUT_RDWR)
        self._control.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
