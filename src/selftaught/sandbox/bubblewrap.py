"""The strong mode: the fork server runs inside bubblewrap, so children see none of the host's files or processes.

bwrap gives the zygote (and every child forked from it) its own mount, pid, ipc, uts and network
namespaces; only the interpreter, the allowed packages, the child code and the scratch folder are
mounted, read-only except the scratch folder. As root, the capabilities to drop children to an
unprivileged uid are the only ones kept.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

SYSTEM_FOLDERS = ("/usr", "/lib", "/lib64", "/bin")


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def bwrap_command(read_only: list[str], read_write: list[str]) -> list[str]:
    """The bwrap prefix for the fork server's command line; paths keep their host names inside."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise FileNotFoundError("bwrap is not installed (apt-get install bubblewrap)")
    command = [
        bwrap,
        "--die-with-parent",
        "--new-session",
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]
    if os.geteuid() == 0:
        # Kept by the fork server only: to give each child a uid and a pid namespace of its own. A child
        # loses every capability when it drops to its uid, before any generated code runs.
        command += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SYS_ADMIN"]
    else:
        command += ["--unshare-user"]
    for folder in SYSTEM_FOLDERS:
        if os.path.islink(folder):
            command += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            command += ["--ro-bind", folder, folder]
    interpreter = {sys.base_prefix, sys.prefix, str(Path(sys.executable).resolve().parent.parent)}
    mounts = [("--ro-bind", path) for path in sorted({*interpreter, *read_only} - set(SYSTEM_FOLDERS))]
    mounts += [("--bind", path) for path in read_write]
    mounts = [(kind, path) for kind, path in mounts if os.path.exists(path)]
    # bwrap would create the folders leading to a mount as 0700: unprivileged children could not pass.
    parents = sorted({str(parent) for _, path in mounts for parent in Path(path).parents if str(parent) != "/"})
    for parent in parents:
        command += ["--perms", "0755", "--dir", parent]
    for kind, path in mounts:
        command += [kind, path, path]
    return [*command, "--"]
