"""The fork server ("zygote"): preloads the interpreter once, then forks one child per job.

Started by the host (`zygote.py FD unshare|isolated PACKAGE_PATH...`) before any secret is loaded,
with the children's whitelisted environment; `isolated` means bubblewrap already gave it an empty
network namespace.
Requests arrive on file descriptor FD, each naming a job by the host's number: `spawn` carries, as
passed file descriptors, the job's channel and the file for the child's stdout and stderr; `kill`
ends a job's process group; `wait` asks for a job's exit status, which is the only answer the zygote
ever sends. Every child starts from the same clean, preloaded state and confines itself before
running generated code.

Every fork write-protects the zygote's whole heap, so each page the zygote writes afterwards costs a
copy-on-write fault while its children run. The loop is kept small for that reason: it answers
nothing on the common path, reaps exited children when the next request arrives instead of on every
SIGCHLD, and watches only the children the host waits for (through pidfds).
"""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import select
import signal
import socket
import sys
import traceback
from typing import Any

import isolation
import protocol
import runner
import seccomp
import watch

MAX_PASSED_FDS = 2
MAX_DESCRIPTOR = 65536
#: How many finished jobs the zygote remembers, for a late `kill` or `wait`.
REMEMBERED_JOBS = 1000
#: How often exits are polled for where pidfds are unavailable.
POLL_SECONDS = 0.02
#: The fork server's own pid namespace, which every fork starts from again (None where it cannot be opened).
PID_NAMESPACE: int | None = None


def _fork_child(control: socket.socket, request: dict[str, Any], fds: list[int]) -> int | None:
    """Forks the job's child; None when the fork failed, which the job's channel then reports."""
    channel_fd, output_fd = fds
    if PID_NAMESPACE is not None:  # each child the first of its own (it checks, and reports when it is not)
        with contextlib.suppress(isolation.LayerUnavailable):
            isolation.new_pid_namespace_for_next_fork(PID_NAMESPACE)
    try:
        pid = os.fork()
    except OSError as error:  # the pids limit, say
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(channel_fd)) as channel:
            failure = f"the sandbox could not start a process for this job: {error}"
            protocol.send_message(channel, {"kind": protocol.FAILURE, "error": failure})
        pid = None
    if pid == 0:
        try:
            control.close()
            os.setsid()
            os.dup2(output_fd, 1)
            os.dup2(output_fd, 2)
            # Nothing of the zygote's stays open in the child: only stdio and the job's channel.
            os.closerange(3, channel_fd)
            os.closerange(channel_fd + 1, MAX_DESCRIPTOR)
            os.chdir(request["scratch"])
            runner.serve_job(socket.socket(fileno=channel_fd), preloaded=True)
        except BaseException:
            traceback.print_exc()  # to the job's output file, where the host shows it
        finally:
            os._exit(1)
    for descriptor in fds:
        os.close(descriptor)
    return pid


class Jobs:
    """The zygote's children by job number, their exit statuses, and the waits the host has asked for."""

    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self.running: dict[int, int] = {}  # job -> pid
        self._finished: collections.OrderedDict[int, tuple[int, int | None]] = collections.OrderedDict()
        self.waits: dict[int, int | None] = {}  # job -> its pidfd, or None where pidfds are unavailable

    def started(self, job: int, pid: int | None) -> None:
        if pid is None:
            self._finish(job, 0, None)
        else:
            self.running[job] = pid

    def kill(self, job: int) -> None:
        """Kills a job's process group while its leader is not reaped yet; afterwards its pid may be another's.

        Nothing of a reaped child is left to kill: it was alone in its pid namespace (whose processes all
        die with their first), and could not fork where seccomp holds.
        """
        pid = self.running.get(job)
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def wait(self, job: int) -> None:
        if job in self._finished or job not in self.running:
            self._answer(job)
            return
        try:
            self.waits[job] = os.pidfd_open(self.running[job])
        except (AttributeError, OSError):
            self.waits[job] = None

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            # A few children run at once: a scan is cheaper than keeping the reverse mapping in step.
            job = next((job for job, running_pid in self.running.items() if running_pid == pid), None)
            if job is not None:
                del self.running[job]
                self._finish(job, pid, os.waitstatus_to_exitcode(status))

    def _finish(self, job: int, pid: int, status: int | None) -> None:
        self._finished[job] = (pid, status)
        if len(self._finished) > REMEMBERED_JOBS:
            self._finished.popitem(last=False)
        if job in self.waits:
            pidfd = self.waits.pop(job)
            if pidfd is not None:
                os.close(pidfd)
            self._answer(job)

    def _answer(self, job: int) -> None:
        status = self._finished[job][1] if job in self._finished else None
        protocol.send_message(self._control, {"kind": "exited", "job": job, "status": status})


def serve(control: socket.socket) -> None:
    """Answers requests until the host closes the control socket."""
    jobs = Jobs(control)
    while True:
        if jobs.waits:
            pidfds = [fd for fd in jobs.waits.values() if fd is not None]
            timeout = POLL_SECONDS if None in jobs.waits.values() else None
            readable, _, _ = select.select([control.fileno(), *pidfds], [], [], timeout)
            if control.fileno() not in readable:
                jobs.reap()
                continue
        header, fds, _, _ = socket.recv_fds(control, protocol.HEADER.size, MAX_PASSED_FDS)
        if not header:
            return  # the host is gone
        request = protocol.receive_body(control, header)
        kind = request["kind"]
        if kind == "spawn":
            jobs.started(request["job"], _fork_child(control, request, fds))
        elif kind == "kill":
            jobs.kill(request["job"])
        elif kind == "wait":
            jobs.wait(request["job"])
        jobs.reap()


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    isolation.die_with_parent()
    runner.preload(sys.argv[3:])
    runner.warm_up()
    watch.prepare()
    network = "isolated"
    if sys.argv[2] == "unshare":  # inside bubblewrap ("isolated") the namespace is already empty
        try:
            isolation.isolate_network_keeping_identity()
        except isolation.LayerUnavailable as error:
            network = str(error)
    isolation.die_with_parent()  # again: entering a user namespace resets it
    global PID_NAMESPACE
    with contextlib.suppress(OSError):
        PID_NAMESPACE = isolation.open_own_pid_namespace()
    # Last of what reads /proc here: a child finds out, and reports, if its /proc still shows pids.
    with contextlib.suppress(isolation.LayerUnavailable):
        isolation.isolate_mounts()
    seccomp.prepare()
    # Preloaded objects move to a permanent generation: a collection in a child then never walks (and
    # copies, page by page) the memory it shares with the zygote.
    gc.freeze()
    protocol.send_message(control, {"kind": "ready", "pid": os.getpid(), "network": network})
    serve(control)


if __name__ == "__main__":
    main()
