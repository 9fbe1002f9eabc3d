"""Host side of the sandbox: starts a child for one job of generated code and serves its calls.

Every piece of generated code (improvers and algorithms) runs through `Launcher.run`. The child
gets a whitelisted environment, a private scratch directory, resource limits and kernel
isolation layers (policy.py) that it applies to itself before touching generated code, its own
session (so a timeout kills the whole process group), and a socket to the host as its only way
to ask for anything. The child's wall-clock budget excludes the time the host spends answering
its calls, so a slow language model never times out an improver. While a job runs, its fork server's
next child is started and confined, to wait for the next job with the same limits (started.py).
Safe to use from many threads.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import tempfile
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selftaught.errors import SandboxError
from selftaught.sandbox.bubblewrap import bwrap_command, bwrap_path
from selftaught.sandbox.cgroups import CgroupUnavailable, ChildrenCgroup, host_group_name, remove_stale_groups
from selftaught.sandbox.child import isolation, protocol
from selftaught.sandbox.executor import CallHandler
from selftaught.sandbox.fork_server import ForkServer, ForkServerPool, ForkServerStopped, PoolClosed
from selftaught.sandbox.instance_data import EncodedInstances
from selftaught.sandbox.outcome import ChildOutcome, SandboxLimits
from selftaught.sandbox.packages import PackageShim
from selftaught.sandbox.policy import CHILD_FOLDER, SandboxPolicy, readable_paths, running_as_root
from selftaught.sandbox.processes import ChildProcess, OutputFile, fork_child, remove_folder, spawn_child
from selftaught.sandbox.session import FORKED_STARTUP_SECONDS, SPAWNED_STARTUP_SECONDS, CallRefused, Conversation
from selftaught.sandbox.started import Identities, StartedChild, WaitingChildren

__all__ = ["CHILD_ENVIRONMENT", "CallRefused", "Launcher"]

#: Where launchers running as root claim their blocks of child uids, machine-wide: the first folder that can be made.
UID_CLAIMS = (Path("/run/selftaught/uid-claims"), Path(tempfile.gettempdir()) / "selftaught-uid-claims")
#: What a child may see of the host environment: nothing but these fixed values.
CHILD_ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    # Many BLAS threads break numpy under a small address-space limit.
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


class Launcher:
    """Runs jobs of generated code in confined child processes on this machine (a JobRunner). Thread-safe."""

    def __init__(self, policy: SandboxPolicy | None = None) -> None:
        self.policy = policy or SandboxPolicy()
        self._shim = PackageShim()
        self._layers: dict[str, Any] | None = None
        self._layers_lock = threading.Lock()
        # As root each child runs as a uid of its own, which no child of another launcher or host may have.
        claims = UID_CLAIMS if running_as_root() else ()
        self._identities = Identities(isolation.CHILD_UID_BASE, isolation.CHILD_UIDS, claims=claims)
        self._waiting = WaitingChildren()
        self._aborted = False
        #: Children started as fresh interpreters (the fork servers' children die with their zygote).
        self._spawned: set[ChildProcess] = set()
        _LIVE.add(self)
        self._cgroup: ChildrenCgroup | None = None
        # Every child's scratch directory lives here: one folder to mount into bubblewrap.
        self._scratch_root = tempfile.mkdtemp(prefix="selftaught-scratch-")
        os.chmod(self._scratch_root, 0o711)
        #: Why children run without cgroup limits, when they do.
        self.cgroup_problem: str | None = "not needed (not running as root)"
        if running_as_root():
            try:
                remove_stale_groups()  # those of hosts killed before they could remove their own
                self._cgroup = ChildrenCgroup(host_group_name(f"{id(self):x}"))
                self.cgroup_problem = None
            except CgroupUnavailable as error:
                self.cgroup_problem = str(error)
        starter = _ForkServerStarter(self._shim, self._scratch_root, self._cgroup, self.uses_bubblewrap)
        self._fork_servers = ForkServerPool(starter, cores=sorted(os.sched_getaffinity(0)))
        # The host's memory and /proc files (where API keys live) stay out of reach of same-user processes.
        isolation.make_undumpable()
        # The fork servers, folders and cgroups go away at exit even when nobody calls close().
        self._resources = _Resources(
            self._scratch_root, self._cgroup, self._shim, self._fork_servers, self._waiting, self._identities
        )
        self._cleanup = weakref.finalize(self, self._resources.release)

    def start(self) -> None:
        """Starts the first fork server now (it starts on first use otherwise); call before loading any secret."""
        if self.policy.fork_server:
            self._fork_servers.first()

    @property
    def uses_bubblewrap(self) -> bool:
        wanted = self.policy.bubblewrap
        return self.policy.fork_server and (bool(wanted) or (wanted is None and bwrap_path() is not None))

    @property
    def cgroup_limits(self) -> str | None:
        """The limits all children share, or None when there are none (see `cgroup_problem`)."""
        return self._cgroup.describe() if self._cgroup is not None else None

    def close(self) -> None:
        """Ends every child and gives back what the launcher holds; later jobs are refused (SandboxAborted)."""
        self._aborted = True
        self._cleanup()

    def abort(self) -> None:
        """Ends every child now, from any thread: jobs under way end at once, and later ones are refused.

        For a host that is stopping: nothing it waits for may then keep it waiting. A job whose child
        was ended this way raises SandboxAborted instead of reporting what happened to the child.
        """
        self._aborted = True
        self._waiting.close()
        self._fork_servers.close()
        with self._layers_lock:
            spawned = list(self._spawned)
        for child in spawned:
            child.kill()

    def _isolation(self) -> dict[str, Any]:
        with self._layers_lock:
            if self._layers is None:
                self._layers = self.policy.isolation(self._shim.paths())
                # Whether children inherit the first fork server's network namespace decides a layer.
                if self.start_and_check_network_inherited():
                    # Children inherit the zygote's empty network namespace; a new one each costs ~1 ms.
                    self._layers["network_namespace"] = False
            return self._layers

    def start_and_check_network_inherited(self) -> bool:
        """True when children get their empty network namespace from the fork server instead of making one.

        Starts the first fork server, if none runs yet, to learn it (every later one must match it).
        """
        return self.policy.fork_server and self._fork_servers.first().network_isolated

    def _scratch(self, uid: int) -> str:
        scratch = tempfile.mkdtemp(prefix="selftaught-child-", dir=self._scratch_root)
        if self._isolation()["drop_privileges"]:
            os.chown(scratch, uid, uid)
        return scratch

    def _start(self, server: ForkServer | None, limits: SandboxLimits) -> StartedChild:
        """A child with its setup sent: it confines itself at once, then waits for its job."""
        uid = self._identities.take()
        try:
            scratch = self._scratch(uid)
        except BaseException:
            self._identities.release(uid)
            raise
        setup = {
            "kind": protocol.SETUP,
            "limits": limits.rlimits(),
            "package_paths": self._shim.paths(),
            "isolation": {**self._isolation(), "uid": uid},
            "scratch": scratch,
        }
        output = OutputFile(scratch)
        host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = self._start_process(server, child_end, scratch, output)
        except BaseException:
            host_end.close()
            output.read(0)
            remove_folder(scratch)
            self._identities.release(uid)
            raise
        finally:
            child_end.close()
            output.close_writer()
        # A child gone already says why, or is found gone, when its job is sent.
        with contextlib.suppress(OSError):
            protocol.send_message(host_end, setup)
        return StartedChild(process, host_end, output, scratch, uid, self._identities)

    def _start_process(
        self, server: ForkServer | None, channel: socket.socket, scratch: str, output: OutputFile
    ) -> ChildProcess:
        if server is not None:
            return fork_child(server, channel, scratch, output)
        child = spawn_child(channel, scratch, output, {**CHILD_ENVIRONMENT, "HOME": scratch, "TMPDIR": scratch})
        with self._layers_lock:
            self._spawned.add(child)
            if self._aborted:  # aborted while it started, after `abort` ended the children it knew
                child.kill()
        if self._cgroup is not None and child.host_pid is not None:
            self._cgroup.add(child.host_pid)  # before the job is sent: no generated code has run yet
        return child

    def _prepare_next(self, server: ForkServer, limits: SandboxLimits) -> None:
        """Starts the server's next child for jobs of these limits, if none is waiting; never fails the job under way."""
        with contextlib.suppress(Exception):  # the zygote gone, say: the next job starts its own child, or learns why
            self._waiting.prepare(server, _setup_of(limits), lambda: self._start(server, limits))

    def run(self, job: Mapping[str, Any], limits: SandboxLimits, serve: CallHandler | None = None) -> ChildOutcome:
        """Runs one job.

        An algorithm job's `instances` (argument lists, or `EncodedInstances`) go to the child once
        its solution has loaded, from `first_instance` (default 0) on.
        """
        if self._aborted:
            raise SandboxAborted("the sandbox was shut down")
        if not self.policy.fork_server:
            return self._run(None, job, limits, serve, may_retry=False)
        try:
            try:
                with self._fork_servers.acquire() as server:
                    return self._run(server, job, limits, serve, may_retry=True)
            except ForkServerStopped:  # no child ran the job: it goes to another zygote, a new one if need be, once
                with self._fork_servers.acquire() as server:
                    return self._run(server, job, limits, serve, may_retry=False)
        except PoolClosed:  # closed or aborted meanwhile, from another thread
            raise SandboxAborted("the sandbox was shut down") from None

    def _run(
        self,
        server: ForkServer | None,
        job: Mapping[str, Any],
        limits: SandboxLimits,
        serve: CallHandler | None,
        may_retry: bool,
    ) -> ChildOutcome:
        instances = job.get("instances")
        if instances is not None and not isinstance(instances, EncodedInstances):
            instances = EncodedInstances.of(instances)
        first = int(job.get("first_instance", 0))
        try:
            fields = {key: value for key, value in job.items() if key not in ("instances", "first_instance")}
            job_frame = protocol.frame({"kind": protocol.JOB, **fields})
        except protocol.ProtocolError as error:
            return ChildOutcome(violation=f"channel to the child failed: {error}")
        child = None
        if server is not None:
            self._waiting.forget(lambda waiting_on: waiting_on.alive)
            child = self._waiting.take(server, _setup_of(limits))
        if child is None:
            child = self._start(server, limits)
        # The server's next child starts while this job runs where it can take a core the job does not need;
        # a zygote pinned to a core would fork it onto the very core the job's instances run on: then after.
        start_next = None if server is None else functools.partial(self._prepare_next, server, limits)
        while_running = start_next if server is not None and not server.pinned else None
        outcome: dict[str, Any] = {}
        try:
            conversation = Conversation(
                child.channel,
                job_frame,
                limits.wall_seconds,
                serve,
                instances,
                float(job.get("time_limit_seconds", 0)),
                FORKED_STARTUP_SECONDS if server is not None else SPAWNED_STARTUP_SECONDS,
            )
            outcome = conversation.run(first, then=while_running)
        finally:
            # The host decides when a job is over: whatever the child does next, its whole process group ends now.
            explain = not ("has_result" in outcome or "failure" in outcome)
            exit_code, text, truncated = child.end(explain, limits.captured_output_bytes)
            with self._layers_lock:
                self._spawned.discard(child.process)
        if start_next is not None and while_running is None and not self._aborted:
            start_next()
        if self._aborted:  # what happened to the child says nothing about its candidate
            raise SandboxAborted("the sandbox was shut down while the job ran")
        if outcome.pop("job_unread", False) and may_retry:
            raise ForkServerStopped(f"the job's child went away without reading its job: {outcome.get('violation')}")
        return ChildOutcome(**outcome, exit_code=exit_code, output=text, output_truncated=truncated)


def _setup_of(limits: SandboxLimits) -> tuple[tuple[str, int], ...]:
    """What a waiting child was confined with, besides what every child of the launcher shares."""
    return tuple(sorted(limits.rlimits().items()))


class SandboxAborted(SandboxError):
    """The launcher was aborted (the host is stopping): the job was not run, or its child was ended."""


#: Every launcher not yet collected, for `abort_every_launcher`.
_LIVE: weakref.WeakSet[Launcher] = weakref.WeakSet()


def abort_every_launcher() -> None:
    """Ends every sandboxed child of this process now (the CLI calls it on a thread when asked to stop)."""
    for launcher in list(_LIVE):
        launcher.abort()


@dataclass(frozen=True)
class _ForkServerStarter:
    """Starts one zygote for the launcher's pool, holding nothing of the launcher (its finalizer must be able to run)."""

    shim: PackageShim
    scratch_root: str
    cgroup: ChildrenCgroup | None
    bubblewrap: bool

    def __call__(self) -> ForkServer:
        server = ForkServer(CHILD_ENVIRONMENT, self.shim.paths(), self._bwrap_prefix())
        if self.cgroup is not None:
            self.cgroup.add(server.pid)  # every child forked from now on inherits the limits
        return server

    def _bwrap_prefix(self) -> list[str]:
        if not self.bubblewrap:
            return []
        if bwrap_path() is None:
            raise SandboxError("the strong sandbox needs bubblewrap: apt-get install bubblewrap")
        read_only = [str(CHILD_FOLDER), *self.shim.paths(), *readable_paths(self.shim.paths())]
        return bwrap_command(read_only, [self.scratch_root])


@dataclass
class _Resources:
    """What a launcher must give back: the fork servers first (their children hold the cgroups), then the rest."""

    scratch_root: str
    cgroup: ChildrenCgroup | None
    shim: PackageShim
    fork_servers: ForkServerPool
    waiting: WaitingChildren
    identities: Identities

    def release(self) -> None:
        self.waiting.close()
        self.fork_servers.close()
        self.identities.close()
        if self.cgroup is not None:
            self.cgroup.remove()
        self.shim.close()
        remove_folder(self.scratch_root)
