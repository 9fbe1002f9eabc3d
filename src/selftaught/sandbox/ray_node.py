"""The nodes' side of `--executor ray`: each node's sandbox, a Ray actor running the jobs the host sends it.

Loaded on the nodes by Ray, and on the host through ray_executor.py only. Nothing here holds
anything of the host's: the actor gets the run's `SandboxPolicy` and, per job, the job's data.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray

from selftaught.sandbox.doctor import probe
from selftaught.sandbox.launcher import Launcher
from selftaught.sandbox.outcome import ChildOutcome, SandboxLimits
from selftaught.sandbox.policy import SandboxPolicy
from selftaught.version import __version__

#: How often a node's sandbox checks that its raylet (the actor's parent process) is still there.
RAYLET_WATCH_SECONDS = 1.0


@dataclass(frozen=True)
class NodeReport:
    """One node's sandbox as its probe child found it, judged on the node (whether it runs as root is its own)."""

    node: str
    address: str
    cpus: int
    #: Each layer's state: 'active', 'not needed', or why it is missing.
    layers: dict[str, str]
    #: What strict mode refuses to run without there, with why each is missing.
    missing_required: dict[str, str]
    #: Each escape attempt of the probe child, True when it was blocked.
    checks: dict[str, bool]
    guarantees: dict[str, str]
    problem: str | None
    strict_available: bool

    @property
    def name(self) -> str:
        return node_name(self.node, self.address)


def node_name(node: str, address: str) -> str:
    """A node as messages name it: the start of its Ray node id, and its address."""
    return f"{node[:12]} ({address})"


class NodeSandbox:
    """The sandbox of one node, as a Ray actor: a `Launcher` with the run's policy, running the jobs it is sent."""

    def __init__(self, policy: SandboxPolicy) -> None:
        self._node = ray.get_runtime_context().get_node_id()
        self._launcher = Launcher(policy)
        self._launcher.start()
        watch = threading.Thread(
            target=self._end_with_raylet, args=(os.getppid(),), name="end-with-raylet", daemon=True
        )
        watch.start()

    def _end_with_raylet(self, raylet: int) -> None:
        """Ends the node's children, and this actor, once its raylet is gone (a killed raylet leaves its workers)."""
        while os.getppid() == raylet:
            time.sleep(RAYLET_WATCH_SECONDS)
        self._launcher.close()
        os._exit(1)

    def version(self) -> str:
        return __version__

    def run(self, fields: Mapping[str, Any], instances: Any, limits: SandboxLimits) -> ChildOutcome:
        job = {**fields, "instances": instances} if instances is not None else dict(fields)
        return self._launcher.run(job, limits)  # which node ran it, the host knows itself

    def probe(self, address: str, cpus: int) -> NodeReport:
        report = probe(self._launcher)
        return NodeReport(
            node=self._node,
            address=address,
            cpus=cpus,
            layers=report.layers,
            missing_required={name: report.missing[name] for name in report.missing_required},
            checks=report.checks,
            guarantees=report.guarantees,
            problem=report.problem,
            strict_available=report.strict_available,
        )

    def close(self) -> None:
        self._launcher.close()
