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
import fcntl
import itertools
import os
import select
import socket
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from selftaught.errors import SandboxError
from selftaught.sandbox.fork_server import ForkServer
from selftaught.sandbox.processes import EXIT_GRACE_SECONDS, ChildProcess, OutputFile, remove_folder

#: Children kept waiting per fork server, one per setup (an improver's limits and an algorithm's, say).
WAITING_PER_SERVER = 2
#: Uids a launcher claims at once, for its children (at most a few of them run at a time).
UID_BLOCK = 256


class Identities:
    """Hands out the uids children run as: one no started child of any launcher on this machine holds.

    Each launcher claims a block of uids of its own, machine-wide, by holding the lock of the block's
    file in `claims` (a lock the kernel releases when the process ends, however it ends); within its
    block it hands out a uid no started child of its own holds, and not soon again.
    """

    def __init__(self, base: int, count: int, block: int = UID_BLOCK, claims: tuple[Path, ...] = ()) -> None:
        self._claim: int | None = None
        if claims:
            base, count = self._claim_block(base, count, block, claims)
        self.first, self.count = base, count
        self._next = itertools.count(1)
        self._held: set[int] = set()
        self._lock = threading.Lock()

    def _claim_block(self, base: int, count: int, block: int, folders: tuple[Path, ...]) -> tuple[int, int]:
        """Locks the first free block in the first folder that can hold claims (every host finds the same one)."""
        claims = None
        for folder in folders:
            with contextlib.suppress(OSError):
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                claims = folder
                break
        if claims is None:
            raise SandboxError(f"cannot claim uids for children in any of {', '.join(map(str, folders))}")
        for index in range(count // block):
            descriptor = os.open(claims / f"uids-{base + index * block}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                continue
            self._claim = descriptor
            return base + index * block, block
        raise SandboxError(f"every block of uids for children is claimed by other selftaught hosts ({claims})")

    def take(self) -> int:
        with self._lock:
            if len(self._held) >= self.count:
                raise SandboxError("every uid of this launcher's children is in use")
            while True:
                uid = self.first + next(self._next) % self.count
                if uid not in self._held:
                    self._held.add(uid)
                    return uid

    def release(self, uid: int) -> None:
        with self._lock:
            self._held.discard(uid)

    def close(self) -> None:
        """Gives the block back (its children are gone by then)."""
        if self._claim is not None:
            os.close(self._claim)
            self._claim = None


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
            try:
                self.channel.close()
                text, truncated = self.output.read(captured_bytes)
                remove_folder(self.scratch, settle=lambda: self.process.wait(EXIT_GRACE_SECONDS))
            finally:
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
