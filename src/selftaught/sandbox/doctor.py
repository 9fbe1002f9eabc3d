"""What the sandbox really does on this machine: a confined probe child reports missing layers and tries to escape."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field

from selftaught.errors import SandboxError
from selftaught.sandbox.bubblewrap import bwrap_path
from selftaught.sandbox.launcher import Launcher
from selftaught.sandbox.outcome import SandboxLimits
from selftaught.sandbox.policy import GUARANTEES, LAYERS, ROOT_ONLY_LAYERS, required_layers, running_as_root

logger = logging.getLogger("selftaught")

#: Runs inside a confined child; each check is True when the attempt was blocked.
PROBE_SOURCE = """\
import os, socket

def algorithm(host_pid, outside_path):
    def blocked(attempt):
        try:
            attempt()
        except Exception:
            return True
        return False

    def fork():
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)

    def write_outside():
        with open(outside_path, "w") as handle:
            handle.write("escaped")

    return {
        "create a socket": blocked(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
        "read the host's environment": blocked(lambda: open(f"/proc/{host_pid}/environ", "rb").read()),
        "write outside the scratch directory": blocked(write_outside),
        "fork a process": blocked(fork),
        "signal the host": blocked(lambda: os.kill(host_pid, 0)),
        "keep root privileges": os.getuid() != 0,
    }
"""


@dataclass(frozen=True)
class SandboxReport:
    """Which layers children could not apply (with the reason) and which escape attempts were blocked."""

    missing: dict[str, str] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    problem: str | None = None
    network_inherited: bool = False
    #: The cgroup limits all children share, or why there are none.
    cgroups: str = "not used"
    bubblewrap: str = "not used"

    @property
    def missing_required(self) -> list[str]:
        return [name for name in required_layers() if name in self.missing]

    @property
    def strict_available(self) -> bool:
        """Whether strict mode would run here: every required layer applied, every escape attempt blocked."""
        return not self.missing_required and all(self.checks.values()) and bool(self.checks)

    @property
    def layers(self) -> dict[str, str]:
        """Each layer's state: 'active', 'not needed', or why it is missing."""
        states = {}
        for name in LAYERS:
            if name in ROOT_ONLY_LAYERS and not running_as_root():
                states[name] = "not needed (not running as root)"
            elif name == "network_namespace" and self.network_inherited:
                states[name] = "active (made by each fork server, shared by its children)"
            else:
                states[name] = self.missing.get(name, "active")
        states["cgroups"] = self.cgroups
        states["bubblewrap"] = self.bubblewrap
        return states

    @property
    def guarantees(self) -> dict[str, str]:
        """Each promise of the sandbox: 'holds', or which layers it would need here."""
        active = {name for name, state in self.layers.items() if state.startswith(("active", "not needed"))}
        found = {}
        for promise, alternatives in GUARANTEES.items():
            if any(set(layers) <= active for layers in alternatives):
                found[promise] = "holds"
            else:
                needs = " or ".join(" + ".join(layers) for layers in alternatives)
                found[promise] = f"does not hold here (needs {needs})"
        return found


def enforce_policy(
    missing_required: dict[str, str],
    problem: str | None,
    strict: bool,
    where: str = "",
    doctor: str = "selftaught doctor",
) -> None:
    """Refuses a strict run when a required layer is missing (each with why); otherwise warns about what is missing.

    `where` names the machine when it is not this one (" on node ..."), `doctor` the command that shows its layers.
    """
    if problem is not None and not strict:
        logger.warning("the sandbox probe failed%s: %s", where, problem)
    if missing_required and strict:
        raise SandboxError(f"strict sandbox refused{where}: {'; '.join(missing_required.values())} (see `{doctor}`)")
    if missing_required:
        logger.warning(
            "sandbox weaker than strict%s: %s missing (see `%s`)", where or " here", ", ".join(missing_required), doctor
        )


def probe(launcher: Launcher) -> SandboxReport:
    outside = os.path.join("/tmp", f"selftaught-probe-{os.getpid()}-{id(launcher)}")
    outcome = launcher.run(
        {
            "job": "algorithm",
            "source": PROBE_SOURCE,
            "entry_point": "algorithm",
            "instances": [[os.getpid(), outside]],
            "time_limit_seconds": 10.0,
            "seed": 0,
        },
        SandboxLimits(wall_seconds=30.0, cpu_seconds=30),
    )
    if os.path.exists(outside):
        shutil.rmtree(outside, ignore_errors=True) if os.path.isdir(outside) else os.remove(outside)
    missing: dict[str, str] = {}
    for event in outcome.events:
        if event["name"] == "sandbox_layer_missing" and isinstance(event["detail"], dict):
            missing.update({str(k): str(v) for k, v in event["detail"].items()})
    output = outcome.instances[0].get("output") if outcome.instances else None
    checks = {str(k): bool(v) for k, v in output.items()} if isinstance(output, dict) else {}
    return SandboxReport(
        missing=missing,
        checks=checks,
        problem=None if checks else outcome.problem,
        network_inherited=launcher.start_and_check_network_inherited(),
        cgroups=f"active ({launcher.cgroup_limits})"
        if launcher.cgroup_limits
        else launcher.cgroup_problem or "not used",
        bubblewrap="active (each fork server runs inside bwrap)"
        if launcher.uses_bubblewrap
        else "not installed (apt-get install bubblewrap)"
        if bwrap_path() is None
        else "not used",
    )
