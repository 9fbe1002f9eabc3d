"""Host side of the fork servers: starts zygotes, asks them for one child per job, learns how children exit.

Jobs are numbered by the host, so spawning and killing need no answer. A zygote speaks only when
asked for a job's exit status; a reader thread takes those answers. Requests to one zygote are
serialized; waiting is not. A pool grows to one zygote per concurrent job, up to one per core.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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


class PoolClosed(SandboxError):
    """The pool was closed (its launcher closed or aborted): it starts no fork server and serves no job any more."""


class ForkServerStopped(SandboxError):
    """No child ran the job: its zygote is gone (killed, say) or its child went before reading it; it can be sent again."""


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
        self._send_lock = threading.Lock()
        self._job_numbers = itertools.count(1)
        # The jobs whose exit status is being waited for, and the statuses that arrived for them.
        self._waiting: set[int] = set()
        self._exits: dict[int, int | None] = {}
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
        #: True once the pool keeps the zygote, and every child it forks, to one core.
        self.pinned = False
        self._control.settimeout(None)
        self._reader = threading.Thread(target=self._read, name="fork-server-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                message = protocol.receive_message(self._control)
                if message["kind"] == "exited":
                    with self._exited:
                        job, status = int(message["job"]), message["status"]
                        if job in self._waiting:
                            self._exits[job] = int(status) if isinstance(status, int) else None
                        self._exited.notify_all()
        except (OSError, protocol.ProtocolError, KeyError, ValueError, TypeError):
            with self._exited:
                self._alive = False
                self._exited.notify_all()

    @property
    def alive(self) -> bool:
        """False once the zygote is known to be gone (it closed its end, or a request could not reach it)."""
        return self._alive

    def spawn(self, channel: socket.socket, output_fd: int, scratch: str) -> int:
        """Has the zygote fork a child serving the job on `channel`; returns the job's number.

        The host need not wait for the fork: the child reads its job whenever it is ready.
        Raises ForkServerStopped when the zygote is gone: no child was started.
        """
        with self._send_lock:
            job = next(self._job_numbers)
            frame = protocol.frame({"kind": "spawn", "job": job, "scratch": scratch})
            self._deliver(lambda: socket.send_fds(self._control, [frame], [channel.fileno(), output_fd]))
        return job

    def _deliver(self, send: Callable[[], object]) -> None:
        """Sends a request the job cannot do without (with the send lock held)."""
        if not self._alive:
            raise ForkServerStopped("the fork server has stopped")
        try:
            send()
        except OSError as error:
            self._alive = False
            raise ForkServerStopped(f"the fork server has stopped: {error}") from None

    def wait(self, job: int, timeout: float) -> int | None:
        """The job's exit code (negative for a signal), or None if it is still running after `timeout`."""
        with self._exited:
            self._waiting.add(job)
        self._send({"kind": "wait", "job": job})
        with self._exited:
            self._exited.wait_for(lambda: job in self._exits or not self._alive, timeout=timeout)
            self._waiting.discard(job)
            return self._exits.pop(job, None)

    def kill(self, job: int) -> None:
        """Kills the job's whole process group."""
        self._send({"kind": "kill", "job": job})

    def _send(self, request: dict[str, object]) -> None:
        with self._send_lock:
            if self._alive:
                with contextlib.suppress(OSError):
                    protocol.send_message(self._control, request)

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
            self._process.wait()  # reaped, or it stays a zombie of the host
        if self._process.stderr is not None:
            self._process.stderr.close()


def _close_started(starting: Future[ForkServer]) -> None:
    if not starting.cancelled() and starting.exception() is None:
        starting.result().close()


class ForkServerPool:
    """Fork servers started as concurrent jobs need them, up to one per core; each job takes the least busy one.

    One zygote forks one child at a time and does its bookkeeping between forks, so jobs started
    together on one zygote queue behind each other while a core idles. Once there are several, each
    zygote (and so each child it forks) keeps to a core of its own: left to the scheduler, two
    evaluations' short hand-offs often end up queued on one core while the other idles. A lone
    zygote is left free, so one busy core never holds up evaluations run one at a time. Every
    zygote is a fresh interpreter started with the children's environment, so one started late
    holds no more of the host than the first, and one found gone is replaced by a new one.
    """

    def __init__(self, start: Callable[[], ForkServer], cores: list[int]) -> None:
        self._start = start
        self._cores = cores
        self._limit = max(1, len(cores))
        self._running: dict[ForkServer, int] = {}  # server -> jobs running on it now
        #: Servers taken out to close: a second `close` (the host's own, after an abort's on another thread)
        #: waits for them too, so the host never exits before it has reaped every zygote.
        self._closing: list[ForkServer] = []
        self._closed = False
        #: Whether the first zygote's children inherit an empty network namespace; every later one must match.
        self._network_isolated: bool | None = None
        self._lock = threading.Lock()
        # A zygote dies with the thread that started it (PR_SET_PDEATHSIG, bwrap's --die-with-parent
        # follow the parent thread): this one lives until the pool closes, unlike a caller's worker thread.
        self._starter: ThreadPoolExecutor | None = None

    def first(self) -> ForkServer:
        """The first running fork server, started now if there is none."""
        with self._lock:
            self._refuse_if_closed()
            self._forget_stopped()
            if not self._running:
                self._add()
            return next(iter(self._running))

    @contextlib.contextmanager
    def acquire(self) -> Iterator[ForkServer]:
        """The fork server for one job, counted as busy until the job ends."""
        with self._lock:
            self._refuse_if_closed()
            self._forget_stopped()
            if not self._running or (len(self._running) < self._limit and all(self._running.values())):
                self._add()
            server = min(self._running, key=self._running.__getitem__)
            self._running[server] += 1
        try:
            yield server
        finally:
            with self._lock:
                if server in self._running:  # not closed meanwhile
                    self._running[server] -= 1

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise PoolClosed("the sandbox was shut down")

    def _forget_stopped(self) -> None:
        for server in [server for server in self._running if not server.alive]:
            del self._running[server]  # its jobs, if any, end on their own
            server.close()

    def _add(self) -> None:
        if self._starter is None:
            self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fork-server-starter")
        starting = self._starter.submit(self._start)
        try:
            server = starting.result()
        except SandboxError:
            if not self._running:
                raise
            self._limit = len(self._running)  # the machine has no room for more: the running ones will do
            return
        except BaseException:  # interrupted (Ctrl-C, SIGTERM) while it starts: it is closed once it has started
            starting.add_done_callback(_close_started)
            raise
        if self._closed:  # closed while it started (an abort from another thread): it serves nothing
            server.close()
            raise PoolClosed("the sandbox was shut down")
        if self._network_isolated is None:
            self._network_isolated = server.network_isolated
        elif server.network_isolated != self._network_isolated:
            # The children's layers were chosen for the first one's network: a different one cannot serve them.
            server.close()
            if not self._running:
                raise SandboxError("a new fork server could not give children an empty network namespace")
            self._limit = len(self._running)
            return
        self._running[server] = 0
        if len(self._running) > 1:
            for core, running in zip(self._cores, self._running, strict=False):
                with contextlib.suppress(OSError):  # gone, or not ours to move: it runs unpinned
                    os.sched_setaffinity(running.pid, {core})
                    running.pinned = True

    @property
    def servers(self) -> list[ForkServer]:
        with self._lock:
            return list(self._running)

    def close(self) -> None:
        self._closed = True  # first, without the lock: a zygote starting under it now is closed as it comes up
        with self._lock:
            self._closing += self._running
            servers, self._running = list(self._closing), {}
            starter, self._starter = self._starter, None
        for server in servers:
            server.close()
        if starter is not None:
            starter.shutdown(wait=False)
