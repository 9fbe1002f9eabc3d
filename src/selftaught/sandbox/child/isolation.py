"""Kernel isolation layers a child applies to itself before generated code runs; standard library and ctypes only.

Each layer is a function that either applies completely or raises `LayerUnavailable` with the
reason; the runner decides whether a missing layer is fatal (strict mode) or only reported.
Order matters: privileges are dropped and namespaces entered before Landlock and seccomp
(seccomp.py), which forbid both afterwards.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import struct
from collections.abc import Iterable

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 0x4000, 1 << 18
MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE = 442, -100, 0x8000
MOUNT_ATTR_NOATIME, MOUNT_ATTR_ATIME_MASK = 0x10, 0x70
#: Children run as uids from here on as root, each its own (nobody's uid, 65534, is shared by too much).
CHILD_UID_BASE = 200_000
CHILD_UIDS = 1 << 16

LANDLOCK_CREATE_RULESET, LANDLOCK_ADD_RULE, LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
# Filesystem rights by the Landlock ABI that introduced them.
FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_TRUNCATE, FS_IOCTL_DEV = 1 << 14, 1 << 15
FILE_ONLY_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1


class LayerUnavailable(Exception):
    """This kernel, machine or privilege level does not allow the layer; the message says why."""


def _check(result: int, what: str) -> int:
    if result < 0:
        error = ctypes.get_errno()
        raise LayerUnavailable(f"{what} failed: {os.strerror(error)}")
    return result


def die_with_parent() -> None:
    parent = os.getppid()
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def make_undumpable() -> None:
    """Hides the process's /proc files and memory from other processes of its user."""
    _check(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def limit_processes(count: int) -> None:
    resource.setrlimit(resource.RLIMIT_NPROC, (count, count))


def drop_privileges(uid: int) -> None:
    """As root: become `uid`, an identity no other running child has, so limits on processes count for it alone.

    The host gives each child its own unprivileged uid: a child then cannot signal, reprioritize or
    trace another even where seccomp is missing, and the per-user process limit (which counts
    threads) is not shared, so one child can neither starve nor signal another through it.
    """
    if os.geteuid() != 0:
        return
    try:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    except OSError as error:
        raise LayerUnavailable(f"dropping to uid {uid} failed: {error}") from None


def open_own_pid_namespace() -> int:
    """The fork server's own pid namespace, kept open so that each fork can start from it again."""
    return os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)


def new_pid_namespace_for_next_fork(own: int) -> None:
    """Makes the next child the first process (pid 1) of a namespace of its own (for the fork server).

    No pid a child uses is then seen by any other child: a candidate cannot pass anything to the next
    through the pids it makes the kernel hand out. Needs CAP_SYS_ADMIN in the fork server's user namespace.
    """
    _check(_libc.setns(own, CLONE_NEWPID), "setns(CLONE_NEWPID)")
    _check(_libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")


def check_own_pid_namespace() -> None:
    """In a child: raises LayerUnavailable unless it is alone in a pid namespace of its own, and sees no other's pids."""
    if os.getpid() != 1:
        raise LayerUnavailable("the fork server could not give this child a pid namespace of its own")
    try:
        shown = any(name.isdigit() for name in os.listdir("/proc"))
    except OSError:
        shown = False
    if shown:
        raise LayerUnavailable("/proc shows other processes' pids (the fork server could not hide it)")


def isolate_mounts() -> None:
    """For the fork server: a mount namespace of its own, which every child inherits, where reading leaves no trace.

    Its /proc is empty: a child alone in its pid namespace sees no other process through system
    calls, but a /proc mounted for an outer namespace still shows their pids to stat and readlink,
    which Landlock allows, so one candidate could pass numbers to the next through the pids the
    kernel hands out (children need nothing in /proc; Landlock keeps them from opening it anyway).
    And no read updates a file's access time: a candidate could otherwise mark files it may read,
    one bit each, for a later one to find with stat. Best effort for the second: where the mounts'
    time flags are locked (a user namespace, without root), they stay as they are.
    """
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making the mounts private")
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    _check(_libc.mount(b"none", b"/proc", b"tmpfs", flags, b"size=4k"), "mounting an empty /proc")
    no_access_times = struct.pack("QQQQ", MOUNT_ATTR_NOATIME, MOUNT_ATTR_ATIME_MASK, 0, 0)
    _libc.syscall(MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, no_access_times, len(no_access_times))


def isolate_network() -> None:
    """New user and network namespaces: no interface but a down loopback, so no IP traffic at all."""
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNET), "unshare(CLONE_NEWUSER | CLONE_NEWNET)")


def isolate_network_keeping_identity() -> None:
    """For the fork server, whose children inherit it: an empty network namespace, same user ids.

    Root needs no user namespace for that and keeps the right to drop children to nobody; any
    other user enters a user namespace that maps its own ids, so files look the same.
    """
    if os.geteuid() == 0:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        return
    uid, gid = os.geteuid(), os.getegid()
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNET), "unshare(CLONE_NEWUSER | CLONE_NEWNET)")
    try:
        for path, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{path}", "w") as handle:
                handle.write(text)
    except OSError as error:
        raise LayerUnavailable(f"mapping ids in the new user namespace failed: {error}") from None


def landlock_abi() -> int:
    version = _libc.syscall(LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    return int(version) if version > 0 else 0


def restrict_filesystem(read_only: Iterable[str], read_write: Iterable[str]) -> None:
    """Landlock: only the given paths are reachable; TCP, abstract UNIX sockets and outside signals are denied."""
    abi = landlock_abi()
    if abi < 1:
        raise LayerUnavailable("Landlock is not supported by this kernel")
    fs_rights = FS_RIGHTS_BY_ABI[max(level for level in FS_RIGHTS_BY_ABI if level <= abi)]
    net_rights = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scopes = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    attribute = struct.pack("QQQ", fs_rights, net_rights, scopes)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    ruleset = _check(_libc.syscall(LANDLOCK_CREATE_RULESET, attribute, len(attribute), 0), "landlock_create_ruleset")
    try:
        read_rights = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
        for paths, rights in ((read_only, read_rights), (read_write, fs_rights)):
            for path in paths:
                _allow_path(ruleset, path, rights & fs_rights)
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        _check(_libc.syscall(LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _allow_path(ruleset: int, path: str, rights: int) -> None:
    try:
        descriptor = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a path that does not exist needs no rule
    try:
        if not os.path.isdir(path):
            rights &= FILE_ONLY_RIGHTS
        rule = struct.pack("=Qi", rights, descriptor)
        _check(
            _libc.syscall(LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, rule, 0), f"landlock rule for {path}"
        )
    finally:
        os.close(descriptor)
