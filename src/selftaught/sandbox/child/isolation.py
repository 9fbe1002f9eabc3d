"""Kernel isolation layers a child applies to itself before generated code runs; standard library and ctypes only.

Each layer is a function that either applies completely or raises `LayerUnavailable` with the
reason; the runner decides whether a missing layer is fatal (strict mode) or only reported.
Order matters: privileges are dropped and namespaces entered before Landlock and seccomp, which
forbid both afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
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
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000
UNPRIVILEGED_UID = 65534

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


def drop_privileges() -> None:
    """As root: become nobody, so rlimits on processes apply and host files are out of reach."""
    if os.geteuid() != 0:
        return
    try:
        os.setgroups([])
        os.setresgid(UNPRIVILEGED_UID, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        os.setresuid(UNPRIVILEGED_UID, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
    except OSError as error:
        raise LayerUnavailable(f"dropping to uid {UNPRIVILEGED_UID} failed: {error}") from None


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


# --- seccomp ----------------------------------------------------------------------------------

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000
# Syscalls generated code never needs: new sockets, exec, new processes, reaching other processes,
# new namespaces and mounts, kernel attack surface that bypasses seccomp (io_uring) or needs none.
DENIED_SYSCALLS = {
    "x86_64": {
        "socket": 41, "socketpair": 53, "execve": 59, "execveat": 322, "fork": 57, "vfork": 58,
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "unshare": 272, "setns": 308,
        "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "open_tree": 428, "move_mount": 429,
        "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438, "bpf": 321, "perf_event_open": 298,
        "userfaultfd": 323, "io_uring_setup": 425, "keyctl": 250, "add_key": 248, "request_key": 249,
        "kexec_load": 246, "reboot": 169, "init_module": 175, "finit_module": 313, "delete_module": 176,
    },
    "aarch64": {
        "socket": 198, "socketpair": 199, "execve": 221, "execveat": 281,
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "unshare": 97, "setns": 268,
        "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "open_tree": 428, "move_mount": 429,
        "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
        "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438, "bpf": 280, "perf_event_open": 241,
        "userfaultfd": 282, "io_uring_setup": 425, "keyctl": 219, "add_key": 217, "request_key": 218,
        "kexec_load": 104, "reboot": 142, "init_module": 105, "finit_module": 273, "delete_module": 106,
    },
}  # fmt: skip
CLONE = {"x86_64": 56, "aarch64": 220}
CLONE3 = 435
SIGNAL_SYSCALLS = {"x86_64": (62, 200, 234), "aarch64": (129, 130, 131)}  # kill, tkill, tgkill

BPF_LD_W_ABS, BPF_JEQ_K, BPF_JSET_K, BPF_RET_K = 0x20, 0x15, 0x45, 0x06
BPF_JGE_K = 0x35
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
OFFSET_NR, OFFSET_ARCH, OFFSET_ARG0 = 0, 4, 16
EPERM, ENOSYS = 1, 38


def _statement(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


#: The comparison with the filtering process's own pid; 0xFFFFFFFF is never a pid.
OWN_PID_PLACEHOLDER = _statement(BPF_JEQ_K, 0xFFFFFFFF, jt=1)


def seccomp_program(machine: str) -> bytes:
    """A BPF filter: deny the syscalls above with EPERM; threads yes, processes no; signals only to itself.

    The process's own pid is left as OWN_PID_PLACEHOLDER: the fork server builds the program once,
    and each child fills in its pid.
    """
    if machine not in AUDIT_ARCH:
        raise LayerUnavailable(f"no seccomp filter for the {machine} architecture")
    deny = _statement(BPF_RET_K, SECCOMP_RET_ERRNO | EPERM)
    allow = _statement(BPF_RET_K, SECCOMP_RET_ALLOW)
    program = [
        _statement(BPF_LD_W_ABS, OFFSET_ARCH),
        _statement(BPF_JEQ_K, AUDIT_ARCH[machine], jt=1),
        _statement(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        _statement(BPF_LD_W_ABS, OFFSET_NR),
    ]
    if machine == "x86_64":  # the x32 ABI would give every syscall a second number
        program += [_statement(BPF_JGE_K, X32_SYSCALL_BIT, jf=1), deny]
    for number in DENIED_SYSCALLS[machine].values():
        program += [_statement(BPF_JEQ_K, number, jf=1), deny]
    # clone3 cannot be inspected (its flags live in memory): make libc fall back to clone.
    program += [_statement(BPF_JEQ_K, CLONE3, jf=1), _statement(BPF_RET_K, SECCOMP_RET_ERRNO | ENOSYS)]
    # clone: only threads (CLONE_THREAD set); the nr is reloaded after looking at the flags.
    program += [
        _statement(BPF_JEQ_K, CLONE[machine], jf=4),
        _statement(BPF_LD_W_ABS, OFFSET_ARG0),
        _statement(BPF_JSET_K, CLONE_THREAD, jt=1),
        deny,
        allow,
    ]
    # kill, tkill, tgkill: only with the first argument equal to its own pid.
    for number in SIGNAL_SYSCALLS[machine]:
        program += [
            _statement(BPF_JEQ_K, number, jf=4),
            _statement(BPF_LD_W_ABS, OFFSET_ARG0),
            OWN_PID_PLACEHOLDER,
            deny,
            allow,
        ]
    program.append(allow)
    return b"".join(program)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _SeccompFilter:
    """The filter program in memory, built once (by the fork server) so that a child only writes its pid into it."""

    def __init__(self, program: bytes) -> None:
        self._pid_offsets = [
            offset + 4  # the comparison's operand follows its code (2 bytes) and jumps (1 + 1)
            for offset in range(0, len(program), 8)
            if program[offset : offset + 8] == OWN_PID_PLACEHOLDER
        ]
        self._program = bytearray(program)
        self._buffer = (ctypes.c_char * len(program)).from_buffer(self._program)
        self._fprog = _SockFprog(len(program) // 8, ctypes.addressof(self._buffer))

    def install(self) -> None:
        pid = struct.pack("I", os.getpid())
        for offset in self._pid_offsets:
            self._program[offset : offset + 4] = pid
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self._fprog), 0, 0), "seccomp filter")


@functools.cache
def _seccomp_filter() -> _SeccompFilter:
    return _SeccompFilter(seccomp_program(platform.machine()))


def prepare_seccomp() -> None:
    """Builds the filter now (the fork server does, before forking), so children only fill in their pid."""
    with contextlib.suppress(LayerUnavailable):
        _seccomp_filter()


def install_seccomp() -> None:
    _seccomp_filter().install()
