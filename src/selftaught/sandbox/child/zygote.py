"""The fork server ("zygote"): preloads the interpreter once, then forks one child per job.

Started by the host (`zygote.py FD unshare|isolated PACKAGE_PATH...`) before any secret is loaded,
with the children's whitelisted environment; `isolated` means bubblewrap already gave it an empty
network namespace.
Control messages arrive on file descriptor FD: a `spawn` request carries, as passed file
descriptors, the job's channel and the file for the child's stdout and stderr; the zygote
forks, answers with the child's pid, and later reports its exit status. Every child starts
from the same clean, preloaded state and confines itself before running generated code.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import selectors
import signal
import socket
import sys
from typing import Any

import isolation
import protocol
import runner

MAX_PASSED_FDS = 2
MAX_DESCRIPTOR = 65536
# A backstop only: SIGCHLD wakes the loop as soon as a child exits.
REAP_INTERVAL_SECONDS = 0.5


def _fork_child(control: socket.socket, request: dict[str, Any], fds: list[int]) -> int:
    channel_fd, output_fd = fds
    pid = os.fork()
    if pid == 0:
        try:
            control.close()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setsid()
            os.dup2(output_fd, 1)
            os.dup2(output_fd, 2)
            # Nothing of the zygote's stays open in the child: only stdio and the job's channel.
            os.closerange(3, channel_fd)
            os.closerange(channel_fd + 1, MAX_DESCRIPTOR)
            os.chdir(request["scratch"])
            runner.serve_job(socket.socket(fileno=channel_fd), preloaded=True)
        finally:
            os._exit(1)
    for descriptor in fds:
        os.close(descriptor)
    return pid


def _reap(control: socket.socket, children: set[int], exited: collections.deque[int]) -> None:
    for pid in list(children):
        try:
            finished, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            finished, status = pid, 0
        if finished:
            children.discard(pid)
            exited.append(pid)
            protocol.send_message(control, {"kind": "exited", "pid": pid, "status": os.waitstatus_to_exitcode(status)})


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    isolation.die_with_parent()
    runner.preload(sys.argv[3:])
    network = "isolated"
    if sys.argv[2] == "unshare":  # inside bubblewrap ("isolated") the namespace is already empty
        try:
            isolation.isolate_network_keeping_identity()
        except isolation.LayerUnavailable as error:
            network = str(error)
    # SIGCHLD writes to this pipe, so an exit is reported at once rather than at the next poll.
    wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wakeup_write, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    children: set[int] = set()
    # A child's process group may outlive its leader; the host may still ask to kill it.
    exited: collections.deque[int] = collections.deque(maxlen=1000)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wakeup_read, selectors.EVENT_READ)
    # Preloaded objects move to a permanent generation: a collection in a child then never walks (and
    # copies, page by page) the memory it shares with the zygote.
    gc.freeze()
    protocol.send_message(control, {"kind": "ready", "pid": os.getpid(), "network": network})
    while True:
        ready = {key.fileobj for key, _ in selector.select(timeout=REAP_INTERVAL_SECONDS if children else None)}
        if wakeup_read in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wakeup_read, 4096)
        if control in ready:
            header, fds, _, _ = socket.recv_fds(control, protocol.HEADER.size, MAX_PASSED_FDS)
            if not header:
                return  # the host is gone
            request = protocol.receive_body(control, header)
            if request["kind"] == "spawn":
                pid = _fork_child(control, request, fds)
                children.add(pid)
                protocol.send_message(control, {"kind": "spawned", "pid": pid})
            elif request["kind"] == "instances":
                runner.CACHED_INSTANCES[request["key"]] = runner.decode_instances(request["instances"])
            elif request["kind"] == "kill" and (request["pid"] in children or request["pid"] in exited):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(request["pid"], signal.SIGKILL)
        _reap(control, children, exited)


if __name__ == "__main__":
    main()
