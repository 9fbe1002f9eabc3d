"""Which isolation layers children get, which of them this machine supports, and what strict mode demands."""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHILD_FOLDER = Path(__file__).parent / "child"

#: Layers in the order children apply them, with what each one stops.
LAYERS = {
    "pid_namespace": "each child alone in a pid namespace of its own, its /proc empty: no pid it uses is seen by another",
    "max_processes": "RLIMIT_NPROC on the child's own uid (fork and thread bombs)",
    "drop_privileges": "as root, each child runs as an unprivileged uid of its own",
    "network_namespace": "user + network namespaces: no network, loopback included",
    "die_with_parent": "children die with the host (PR_SET_PDEATHSIG, which seccomp then keeps set)",
    "undumpable": "no other process may read the child's memory or /proc files",
    "landlock": "filesystem allow-list, TCP denied, no signals or abstract sockets outside",
    "seccomp": "no sockets, exec, fork, ptrace, mount, unshare, SysV IPC; signals, limits and priority only to itself",
}
#: Layers used where the machine allows them, not required by strict mode.
OPTIONAL_LAYERS = {
    "cgroups": "as root, cgroup v1 hard caps on the children's memory and process count",
    "bubblewrap": "the fork server in bwrap: no host files, processes or network in sight",
}
ROOT_ONLY_LAYERS = ("pid_namespace", "max_processes", "drop_privileges")
#: What the sandbox promises, and the sets of layers that each keep the promise (any one set, whole).
#: Without bubblewrap every promise but the last rests on Landlock and seccomp.
GUARANTEES: dict[str, tuple[tuple[str, ...], ...]] = {
    "no network, loopback included": (("network_namespace",), ("bubblewrap",)),
    "no host file read or written outside the allow-list and scratch": (("landlock",),),
    "no process started, no program executed": (("seccomp",),),
    "a child signals, limits, reprioritizes or traces only itself": (("seccomp",), ("drop_privileges",)),
    "nothing one child does with pids or process counts is seen by another": (("pid_namespace", "drop_privileges"),),
    "no IPC object shared between candidates or outliving one": (("seccomp",),),
    "children die with the host, even if they try not to": (("die_with_parent", "seccomp"), ("bubblewrap",)),
    "host processes and their /proc files out of reach": (("landlock", "seccomp", "undumpable"), ("bubblewrap",)),
    "the host's processes and files out of sight": (("bubblewrap",),),
    "memory and processes capped for all children together": (("cgroups",),),
}
PROCESS_LIMIT_AS_NOBODY = 256


def running_as_root() -> bool:
    return os.geteuid() == 0


def required_layers() -> tuple[str, ...]:
    """What strict mode refuses to run without; the root-only layers only apply to root."""
    return tuple(name for name in LAYERS if running_as_root() or name not in ROOT_ONLY_LAYERS)


def readable_paths(package_paths: list[str]) -> list[str]:
    """What a confined child may read: the interpreter, the standard library, the allowed packages, /usr."""
    paths = {
        str(CHILD_FOLDER),
        sysconfig.get_paths()["stdlib"],
        sysconfig.get_paths()["platstdlib"],
        str(Path(sys.executable).resolve().parent),
        "/usr",
        "/lib",
        "/lib64",
    }
    for folder in package_paths:
        paths.add(folder)
        for entry in Path(folder).iterdir():
            paths.add(str(entry.resolve()))
    return sorted(paths)


@dataclass(frozen=True)
class SandboxPolicy:
    """`strict` refuses to run generated code when a required layer is missing; the default warns and goes on.

    `bubblewrap` runs the fork server inside bwrap: None uses it when installed, True requires it.
    """

    strict: bool = False
    fork_server: bool = True
    bubblewrap: bool | None = None
    #: The reporter stops a child at its first attempt that could reach into the reporter itself: walking gc
    #: (which finds every object) or running native code (ctypes, which can rewrite any memory). False only
    #: reports those attempts: for tests that search a child's memory or probe the kernel's layers beneath.
    stop_when_reporter_reachable: bool = True

    def isolation(self, package_paths: list[str]) -> dict[str, Any]:
        root = running_as_root()
        return {
            "die_with_parent": True,
            "undumpable": True,
            "pid_namespace": self.fork_server,
            "max_processes": PROCESS_LIMIT_AS_NOBODY if root else 0,
            "drop_privileges": root,
            "network_namespace": True,
            "landlock": {"read_only": readable_paths(package_paths)},
            "seccomp": True,
            "strict": self.strict,
            "stop_when_reporter_reachable": self.stop_when_reporter_reachable,
        }
