"""Children started ahead of their jobs: what the host holds for one, the identities they take, and the ones waiting.

A child needs nothing of its job to confine itself. Its setup (limits, layers, identity, scratch
folder) comes from the launcher and the job's limits alone, so the launcher starts the next child
of a fork server while the current job runs: the child applies every layer and installs its
reporter, then waits for its job with no generated code in it. A job takes a waiting child
confined with its own limits, or starts one. The fork and the layers then cost the evaluation
nothing where a core is free.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import select
import shutil
import socket
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from selftaught.sandbox.fork_server import ForkServer
from selftaught.sandbox.processes import ChildProcess, OutputFile

#: Children kept waiting per fork server, one per setup (an improver's limits and an algorithm's, say).
WAITING_PER_SERVER = 2


class Identities:
    """Hands out the uids children run as: one no started child holds, and not soon handed out again."""

    def __init__(self, base: int, count: int) -> None:
        self._base, self._count = base, count
        self._next = itertools.count(1)
        self._held: set[int] = set()
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            if len(self._held) >= self._count:
                raise RuntimeError("every child identity is in use")
            while True:
                uid = self._base + next(self._next) % self._count
                if uid not in self._held:
                    self._held.add(uid)
                    return uid

    def release(self, uid: int) -> None:
        with self._lock:
            self._held.discard(uid)


@dataclass(eq=False)
class StartedChild:
    """A started child and what the host holds for it until its job is over."""

    process: ChildProcess
    #: The host's end of the child's channel.
    channel: socket.socket
    output: OutputFile
    scratch: str
    uid: int
    identities: Identities

    def end(self, explain: bool, captured_bytes: int) -> tuple[int | None, str, bool]:
        """Ends the child's whole process group and gives back what it held; its exit code (with `explain`) and output."""
        try:
            exit_code = self.process.end(explain)
        finally:
            self.channel.close()
            text, truncated = self.output.read(captured_bytes)
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.identities.release(self.uid)
        return exit_code, text, truncated

    def gone(self) -> bool:
        """True once the child's end of the channel is closed: it failed to start, or left, before any job."""
        poller = select.poll()
        poller.register(self.channel, select.POLLHUP)
        return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))

    def discard(self) -> None:
        """Ends a child that never got a job."""
        with contextlib.suppress(Exception):  # a zygote gone meanwhile took the child with it
            self.end(explain=False, captured_bytes=0)


class WaitingChildren:
    """Children started and confined ahead of a job, by fork server and setup. Thread-safe."""

    def __init__(self) -> None:
        self._waiting: collections.OrderedDict[tuple[ForkServer, Hashable], StartedChild] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    def take(self, server: ForkServer, setup: Hashable) -> StartedChild | None:
        """The child waiting for the server's next job of this setup, if there is one and it is still there."""
        with self._lock:
            child = self._waiting.pop((server, setup), None)
        if child is not None and child.gone():  # its fork failed, say: the job is better off with a new child
            child.discard()
            return None
        return child

    def prepare(self, server: ForkServer, setup: Hashable, start: Callable[[], StartedChild]) -> None:
        """Starts a child for the server's next job of this setup, unless one is waiting already."""
        key = (server, setup)
        with self._lock:
            if self._closed or key in self._waiting:
                return
        child = start()
        surplus = [child]
        with self._lock:
            if not self._closed and key not in self._waiting:
                self._waiting[key] = child
                surplus = []
                of_server = [waiting for waiting in self._waiting if waiting[0] is server]
                surplus = [self._waiting.pop(oldest) for oldest in of_server[:-WAITING_PER_SERVER]]
        for extra in surplus:
            extra.discard()

    def forget(self, keep: Callable[[ForkServer], bool]) -> None:
        """Discards the children of every server `keep` says no to (stopped servers, say)."""
        with self._lock:
            gone = [key for key in self._waiting if not keep(key[0])]
            children = [self._waiting.pop(key) for key in gone]
        for child in children:
            child.discard()

    def close(self) -> None:
        """Discards every waiting child, and every child offered from now on."""
        with self._lock:
            self._closed = True
            children, self._waiting = list(self._waiting.values()), collections.OrderedDict()
        for child in children:
            child.discard()

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)
