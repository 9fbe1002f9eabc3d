"""Evaluations on a Ray cluster: each node's own sandbox runs the jobs, the host keeps everything else (a JobRunner).

Loaded only for `--executor ray`: nothing else in selftaught imports Ray, or ray_node.py (the
nodes' side). Every node with a CPU gets one actor that owns a `Launcher` with the run's
`SandboxPolicy`: its own fork servers, the same confined children and layers as on the host. Only
data crosses: the job (program text, instance arguments, limits, seed) goes out, the child's raw
outcome comes back and is scored on the host. Jobs whose calls the host answers (improver runs)
stay on the host. A node lost while it runs a job (its raylet killed, its machine gone) is dropped
for the rest of the attempt and the job runs again on another node; the host records each
evaluation once, when its outcome is back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from selftaught.errors import SandboxError

try:
    import ray
except ModuleNotFoundError as missing:  # the one place that says so, for every command that asks for Ray
    if missing.name != "ray":
        raise
    raise SandboxError("--executor ray needs Ray on this host and every node: pip install 'selftaught[ray]'") from None
from ray.exceptions import GetTimeoutError, OutOfMemoryError, RayActorError, RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from selftaught.sandbox.executor import CallHandler
from selftaught.sandbox.instance_data import EncodedInstances
from selftaught.sandbox.launcher import SandboxAborted
from selftaught.sandbox.outcome import ChildOutcome, SandboxLimits
from selftaught.sandbox.policy import SandboxPolicy
from selftaught.sandbox.ray_node import NodeReport, NodeSandbox, node_name
from selftaught.sandbox.ray_returns import NodeReturned, checked_outcome
from selftaught.version import __version__

logger = logging.getLogger("selftaught")

#: How long the head may take to accept a connection: Ray itself would retry for many minutes.
CONNECT_SECONDS = 10.0
#: Beyond CONNECT_SECONDS, how long `ray.init` may take once the head accepted the connection.
INIT_SLACK_SECONDS = 5.0
#: How long a node may take to start its actor (a worker process, selftaught's import, a fork server) or probe.
START_SECONDS = 120.0
#: Beyond a job's own wall-clock limit, how long its outcome may take to come back before its node counts as lost.
RETURN_SLACK_SECONDS = 60.0
#: Ray's settings while it connects (unless set already): a port that answers but is no head (the dashboard's, say)
#: is given up on after about CONNECT_SECONDS instead of many minutes.
CONNECTING = {"RAY_gcs_server_port_wait_time_s": str(int(CONNECT_SECONDS))}
#: Times Ray's memory monitor may kill the sandbox running one job before the job counts as out of memory.
OOM_KILLS_PER_JOB = 2
_NodeSandboxActor = ray.remote(NodeSandbox)


class EventRecorder(Protocol):
    """Where the runner records what happened to the cluster (the run's `RunRecorder`)."""

    def event(self, improver_run_id: int | None, kind: str, detail: dict[str, Any]) -> None: ...


@dataclass
class _Node:
    """The host's view of one node: its actor and the jobs it runs now (at most one per CPU)."""

    id: str
    address: str
    cpus: int
    actor: Any
    under_way: int = 0
    lost: bool = False

    @property
    def name(self) -> str:
        return node_name(self.id, self.address)


@dataclass
class _Shared:
    """Instances sent to the object store once, by the identity of the host's encoding of them (kept alive here)."""

    refs: dict[int, tuple[EncodedInstances, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ref(self, instances: EncodedInstances) -> Any:
        with self.lock:
            if id(instances) not in self.refs:
                self.refs[id(instances)] = (instances, ray.put(instances))
            return self.refs[id(instances)][1]


class RayJobRunner:
    """Runs algorithm jobs in the sandboxes of a Ray cluster's nodes (a JobRunner); safe to use from many threads."""

    def __init__(self, address: str | None, policy: SandboxPolicy) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or "auto"
        self.policy = policy
        self._changes = threading.Condition()
        self._nodes: list[_Node] = []
        #: Where the search for a free node starts: jobs one at a time still go to every node in turn.
        self._turn = 0
        self._shared = _Shared()
        self._recorder: EventRecorder | None = None
        self._closed = False
        # A program that connected to its cluster itself keeps its connection after the run.
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            _connect(self.address)
        try:
            self._nodes = _start_nodes(self.address, policy)
            _check_versions(self._nodes)
        except BaseException:
            self.close()
            raise

    @property
    def cpus(self) -> int:
        """Jobs the live nodes run at once: one per CPU."""
        with self._changes:
            return sum(node.cpus for node in self._nodes if not node.lost)

    def nodes(self) -> list[dict[str, Any]]:
        """The live nodes: id, address, CPUs."""
        with self._changes:
            return [{"node": n.id, "address": n.address, "cpus": n.cpus} for n in self._nodes if not n.lost]

    def report_to(self, recorder: EventRecorder) -> None:
        """Records the nodes now (one event per attempt of a run), and from now on each node lost."""
        self._recorder = recorder
        recorder.event(None, "executor", {"executor": "ray", "address": self.address, "nodes": self.nodes()})

    def probe_nodes(self) -> list[NodeReport]:
        """Runs the sandbox probe on every live node, at once."""
        with self._changes:
            nodes = [node for node in self._nodes if not node.lost]
        pending = [(node, node.actor.probe.remote(node.address, node.cpus)) for node in nodes]
        return [_answer(node, ref, "probe its sandbox") for node, ref in pending]

    def run(self, job: Mapping[str, Any], limits: SandboxLimits, serve: CallHandler | None = None) -> ChildOutcome:
        """Runs one job on the least busy live node; on another one if that node is lost meanwhile."""
        if serve is not None:
            raise SandboxError(
                "a job whose calls the host answers (an improver run) runs on the host, not on a Ray node"
            )
        fields = {key: value for key, value in job.items() if key != "instances"}
        instances = job.get("instances")
        if isinstance(instances, EncodedInstances):
            instances = self._shared.ref(instances)
        span = (int(job.get("first_instance", 0)), len(job["instances"]) if "instances" in job else 0)
        killed_by_memory: list[str] = []
        while True:
            node = self._take()
            actor = node.actor
            try:
                waited = limits.wall_seconds + RETURN_SLACK_SECONDS
                returned = ray.get(actor.run.remote(fields, instances, limits), timeout=waited)
                # Which node ran it is the host's own record: what a node says of itself is its claim.
                return replace(checked_outcome(returned, span, limits), node=node.id)
            except NodeReturned as refused:  # that evaluation's failure, recorded as its violation
                problem = f"node {node.name} returned what no sandbox returns: {refused}"
                logger.warning("%s", problem)
                return ChildOutcome(violation=problem, node=node.id)
            except OutOfMemoryError as error:  # Ray's memory monitor killed the actor under this job; its node is well
                self._refuse_if_closed()
                killed_by_memory.append(node.name)
                self._renew(node, actor, error)
                if len(killed_by_memory) >= OOM_KILLS_PER_JOB:  # the candidate's fault: as a local memory-limit kill
                    where = ", ".join(killed_by_memory)
                    failure = f"MemoryError: Ray's memory monitor killed the sandbox running it, on {where}"
                    return ChildOutcome(failure=failure, node=node.id)
            except RayTaskError as error:  # the node's sandbox itself failed: a candidate's failures come back as data
                self._lose(node, error.cause if isinstance(error.cause, SandboxAborted) else error, actor)
            except RayError as error:  # its actor died, its raylet or machine went, or Ray failed there otherwise
                self._lose(node, error, actor)
            finally:
                self._give_back(node)

    def close(self) -> None:
        """Ends every node's children and gives back what their launchers hold; later jobs are refused."""
        with self._changes:
            self._closed = True
            self._changes.notify_all()
            nodes = list(self._nodes)
        closing = [node.actor.close.remote() for node in nodes if not node.lost]
        if closing:
            with contextlib.suppress(RayError):
                ray.wait(closing, num_returns=len(closing), timeout=10.0)
        for node in nodes:
            with contextlib.suppress(RayError, ValueError):
                ray.kill(node.actor)
        if self._owns_connection and ray.is_initialized():
            ray.shutdown()

    def _take(self) -> _Node:
        """A live node with a free CPU, the least busy one (in turn among equals); waits for one when all are busy."""
        with self._changes:
            while True:
                self._refuse_if_closed()
                if all(node.lost for node in self._nodes):
                    raise SandboxError(
                        f"every node of the Ray cluster at {self.address} was lost; resume the run once it is back"
                    )
                count = len(self._nodes)
                in_turn = [self._nodes[(self._turn + i) % count] for i in range(count)]
                free = [node for node in in_turn if not node.lost and node.under_way < node.cpus]
                if free:
                    node = min(free, key=lambda node: node.under_way / node.cpus)
                    node.under_way += 1
                    self._turn = self._nodes.index(node) + 1
                    return node
                self._changes.wait()

    def _give_back(self, node: _Node) -> None:
        with self._changes:
            node.under_way -= 1
            self._changes.notify_all()

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise SandboxAborted("the sandbox was shut down")

    def _renew(self, node: _Node, actor: Any, error: BaseException) -> None:
        """A new sandbox actor on the node in place of `actor`, which Ray killed (once, whichever job saw it first)."""
        with self._changes:
            if node.lost or node.actor is not actor:
                return
            node.actor = _new_actor(node.id, node.cpus, self.policy)
        with contextlib.suppress(RayError, ValueError):  # dead already, as a rule: its other jobs then run again
            ray.kill(actor)
        logger.warning("the sandbox of Ray node %s was killed (%s); started a new one", node.name, _one_line(error))
        if self._recorder is not None:
            detail = {"node": node.id, "address": node.address, "reason": f"{type(error).__name__}: {_one_line(error)}"}
            self._recorder.event(None, "executor_node_renewed", detail)

    def _lose(self, node: _Node, error: BaseException, actor: Any = None) -> None:
        """Sends no more jobs to the node; says so once, and records it in the run."""
        self._refuse_if_closed()
        with self._changes:
            if node.lost or (actor is not None and node.actor is not actor):  # its old actor, replaced already
                return
            node.lost = True
            self._changes.notify_all()
        if isinstance(error, GetTimeoutError):  # it may still run: it must not take a CPU from the other nodes' jobs
            with contextlib.suppress(RayError, ValueError):
                ray.kill(node.actor)
        reason = f"{type(error).__name__}: {_one_line(error)}"
        logger.warning("lost the Ray node %s (%s); its jobs run again on the other nodes", node.name, reason)
        if self._recorder is not None:
            detail = {"node": node.id, "address": node.address, "reason": reason}
            self._recorder.event(None, "executor_node_lost", detail)


def _connect(address: str) -> None:
    """Connects this process to the cluster, or fails in one line within CONNECT_SECONDS."""
    _check_reachable(address)
    # Ray replaces the SIGTERM handler of the process that connects; the host's own (stop cleanly) stays.
    on_sigterm = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        # No runtime environment: nothing of the host's environment (its API keys) goes to the cluster.
        with _environment(CONNECTING):
            _init_within(address, CONNECT_SECONDS + INIT_SLACK_SECONDS)
    except (ConnectionError, RayError, RuntimeError, ValueError) as error:
        raise SandboxError(
            f"cannot connect to the Ray cluster at {address}: {_one_line(error)} "
            "(is that the head's own port, 6379 unless `ray start --head --port` chose another?)"
        ) from None
    finally:
        if on_sigterm is not None:
            signal.signal(signal.SIGTERM, on_sigterm)


def _init_within(address: str, seconds: float) -> None:
    """`ray.init`, given up on after `seconds`: a port that accepts but never speaks Ray would hold it forever."""
    failed: list[BaseException] = []

    def init() -> None:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except BaseException as error:  # handed to the caller's thread
            failed.append(error)

    # A daemon thread: one still stuck in Ray's connecting holds neither the exit nor the caller.
    connecting = threading.Thread(target=init, name="ray-connect", daemon=True)
    connecting.start()
    connecting.join(seconds)
    if connecting.is_alive():
        raise ConnectionError(f"no answer in Ray's protocol within {seconds:.0f} s")
    if failed:
        raise failed[0]


@contextlib.contextmanager
def _environment(settings: dict[str, str]) -> Iterator[None]:
    """This process's environment with `settings` added where it has none of its own, for the block's duration."""
    added = {name: value for name, value in settings.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _check_reachable(address: str) -> None:
    """Fails at once when nothing answers where Ray would connect: Ray itself would retry for many minutes."""
    target = address.removeprefix("ray://") if address.startswith("ray://") else _as_ray_connects(address)
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise SandboxError(f"a Ray address is HOST:PORT, ray://HOST:PORT or auto, not {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as error:
        named = "" if target == address else f", which is where Ray takes {address} to be"
        raise SandboxError(
            f"cannot reach the Ray cluster's head at {target}{named}: {error.strerror or error} "
            "(is `ray start --head` running there?)"
        ) from None


def _as_ray_connects(address: str) -> str:
    """Where `ray.init(address)` connects: auto is the cluster started on this machine, 127.0.0.1 its own address."""
    try:
        from ray._private.services import canonicalize_bootstrap_address_or_die
    except ImportError:  # a Ray without it: the address as given
        return address
    try:
        return str(canonicalize_bootstrap_address_or_die(address))
    except ConnectionError:
        raise SandboxError(
            "no Ray cluster runs on this machine: start one with `ray start --head`, or give --ray-address HOST:PORT"
        ) from None
    except ValueError:
        raise SandboxError(f"a Ray address is HOST:PORT, ray://HOST:PORT or auto, not {address!r}") from None


def _start_nodes(address: str, policy: SandboxPolicy) -> list[_Node]:
    """One sandbox actor on each live node with a CPU, each checked to run this version of selftaught."""
    nodes = []
    for info in ray.nodes():
        cpus = int(info.get("Resources", {}).get("CPU", 0))
        if info.get("Alive") and cpus >= 1:
            actor = _new_actor(info["NodeID"], cpus, policy)
            nodes.append(_Node(info["NodeID"], str(info.get("NodeManagerAddress", "?")), cpus, actor))
    if not nodes:
        raise SandboxError(f"the Ray cluster at {address} has no live node with a CPU to run evaluations on")
    return nodes


def _new_actor(node: str, cpus: int, policy: SandboxPolicy) -> Any:
    return _NodeSandboxActor.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        max_concurrency=cpus,
        num_cpus=0,  # its jobs are held to the node's CPUs by the host instead
        max_restarts=0,  # a lost node's jobs go to another node, never to a new actor on it
    ).remote(policy)


def _check_versions(nodes: list[_Node]) -> None:
    """Waits for every node's sandbox to start; refuses another selftaught version (its children differ)."""
    versions = [(node, node.actor.version.remote()) for node in nodes]
    for node, ref in versions:
        version = _answer(node, ref, "start its sandbox")
        if version != __version__:
            raise SandboxError(
                f"node {node.name} runs selftaught {version}, this host {__version__}: install the same on every node"
            )


def _answer(node: _Node, ref: Any, doing: str) -> Any:
    """What a node answered; a node that cannot is named in one line, with what it was doing."""
    try:
        return ray.get(ref, timeout=START_SECONDS)
    except RayTaskError as error:
        reason = _one_line(error.cause)
    except RayActorError as error:
        # The traceback of the actor's __init__ is in the message; what it raised comes last.
        text = str(error).strip()
        reason = _one_line(text.splitlines()[-1] if getattr(error, "actor_init_failed", False) and text else error)
    except RayError as error:
        reason = _one_line(error)
    raise SandboxError(
        f"node {node.name} could not {doing}: {reason} (every node needs selftaught[ray] {__version__}, as this host)"
    )


def _one_line(error: object) -> str:
    """The first line of what an error says: Ray's own messages go on for many lines."""
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
