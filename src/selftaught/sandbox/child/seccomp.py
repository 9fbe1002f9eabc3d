"""The seccomp filter a child installs last: what its process may no longer ask of the kernel; stdlib and ctypes only.

Denied outright: new sockets, exec, new processes, reaching other processes' memory, namespaces and
mounts, System V IPC and POSIX message queues (they outlive the process that made them, and
children share them), and kernel attack surface. Allowed only on the child itself (pid 0 or its
own pid): signals, resource limits, priority, scheduling, CPU affinity, I/O priority and memory
placement, so one child can never slow, starve or kill a sibling of the same uid. prctl may not
clear the death signal (the child would outlive the host) nor make the process dumpable or
traceable again. No file locks (`flock`, `fcntl`'s lock and lease commands) and no file watches (dnotify, inotify,
fanotify): children read the same files, so either would be a channel between candidates. Threads are allowed, processes are not.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import struct
from dataclasses import dataclass

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.restype = ctypes.c_int

#: The machines a filter is made for; each syscall's numbers below are given in this order.
MACHINES = ("x86_64", "aarch64")
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000
# Syscalls generated code never needs: new sockets, exec, new processes, reaching other processes,
# new namespaces and mounts, IPC objects that outlive the process, kernel attack surface that
# bypasses seccomp (io_uring) or needs none. None: the machine has no such syscall.
DENIED_SYSCALLS: dict[str, tuple[int | None, ...]] = {
    "socket": (41, 198), "socketpair": (53, 199), "execve": (59, 221), "execveat": (322, 281), "fork": (57, None),
    "vfork": (58, None), "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41),
    "chroot": (161, 51), "open_tree": (428, 428), "move_mount": (429, 429), "fsopen": (430, 430),
    "fsconfig": (431, 431), "fsmount": (432, 432), "fspick": (433, 433), "mount_setattr": (442, 442),
    "pidfd_open": (434, 434), "pidfd_send_signal": (424, 424), "pidfd_getfd": (438, 438), "bpf": (321, 280),
    "perf_event_open": (298, 241), "userfaultfd": (323, 282), "io_uring_setup": (425, 425), "keyctl": (250, 219),
    "add_key": (248, 217), "request_key": (249, 218), "kexec_load": (246, 104), "reboot": (169, 142),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106), "kcmp": (312, 272),
    "process_madvise": (440, 440), "shmget": (29, 194), "shmat": (30, 196), "shmctl": (31, 195), "shmdt": (67, 197),
    "semget": (64, 190), "semop": (65, 193), "semctl": (66, 191), "semtimedop": (220, 192), "msgget": (68, 186),
    "msgsnd": (69, 189), "msgrcv": (70, 188), "msgctl": (71, 187), "mq_open": (240, 180), "mq_unlink": (241, 181),
    "mq_timedsend": (242, 182), "mq_timedreceive": (243, 183), "mq_notify": (244, 184), "mq_getsetattr": (245, 185),
    "flock": (73, 32), "inotify_init": (253, None), "inotify_init1": (294, 26), "inotify_add_watch": (254, 27),
    "fanotify_init": (300, 262), "fanotify_mark": (301, 263),
}  # fmt: skip


@dataclass(frozen=True)
class OwnProcessOnly:
    """A syscall allowed only when its argument `argument` names this process (or 0, with `zero_is_self`).

    With `selector`, argument `selector[0]` must also equal `selector[1]` (e.g. setpriority's `which`
    must be PRIO_PROCESS: its PRIO_USER would reach every process of the uid).
    """

    argument: int = 0
    zero_is_self: bool = True
    selector: tuple[int, int] | None = None


PRIO_PROCESS, IOPRIO_WHO_PROCESS = 0, 1
SIGNALS = OwnProcessOnly(zero_is_self=False)  # kill(0, ...) would reach the whole process group
#: The syscalls allowed only on the process itself, by their rule, with their numbers (as in DENIED_SYSCALLS).
OWN_PROCESS_SYSCALLS: dict[OwnProcessOnly, dict[str, tuple[int, ...]]] = {
    SIGNALS: {
        "kill": (62, 129), "tkill": (200, 130), "tgkill": (234, 131), "rt_sigqueueinfo": (129, 138),
        "rt_tgsigqueueinfo": (297, 240),
    },
    OwnProcessOnly(): {
        "prlimit64": (302, 261), "sched_setparam": (142, 118), "sched_setscheduler": (144, 119),
        "sched_setaffinity": (203, 122), "sched_setattr": (314, 274), "migrate_pages": (256, 238),
        "move_pages": (279, 239),
    },
    OwnProcessOnly(argument=1, selector=(0, PRIO_PROCESS)): {"setpriority": (141, 140)},
    OwnProcessOnly(argument=1, selector=(0, IOPRIO_WHO_PROCESS)): {"ioprio_set": (251, 30)},
}  # fmt: skip
CLONE = {"x86_64": 56, "aarch64": 220}
CLONE3 = 435
PRCTL = {"x86_64": 157, "aarch64": 167}
FCNTL = {"x86_64": 72, "aarch64": 25}
CLONE_THREAD = 0x00010000
#: prctl options refused: clearing the death signal, becoming dumpable again, letting a process trace it.
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_PTRACER = 1, 4, 0x59616D61
DENIED_PRCTL_OPTIONS = (PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_PTRACER)
#: fcntl commands refused: file locks, leases and dnotify watches. Every child can read the same files (the
#: standard library), so a lock one holds and another tests, or a watch that counts another's reads (an
#: adversarial review's dnotify watch counted them exactly), would be a channel between candidates.
F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 5, 6, 7, 36, 37, 38
F_SETLEASE, F_GETLEASE, F_NOTIFY = 1024, 1025, 1026
DENIED_FCNTL_COMMANDS = (
    F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW, F_SETLEASE, F_GETLEASE, F_NOTIFY,
)  # fmt: skip

BPF_LD_W_ABS, BPF_JEQ_K, BPF_JSET_K, BPF_JGE_K, BPF_RET_K = 0x20, 0x15, 0x45, 0x35, 0x06
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
OFFSET_NR, OFFSET_ARCH = 0, 4
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
EPERM, ENOSYS = 1, 38
#: Stands for the filtering process's own pid until a child fills it in; 0xFFFFFFFF is never a pid.
OWN_PID = 0xFFFFFFFF
ALLOW, DENY = "allow", "deny"


def _statement(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def _argument_offset(index: int) -> int:
    """Where the low 32 bits of a syscall argument sit in seccomp_data (little-endian machines)."""
    return 16 + 8 * index


def _block(number: int, body: list[tuple[int, int, int | str, int | str]]) -> list[bytes]:
    """`if nr == number: body` where the body ends in the allow and deny returns its jumps name.

    The body's statements are (code, k, jt, jf) with jumps as offsets or ALLOW/DENY; every path
    through it returns, so the syscall number stays loaded for whatever follows the block.
    """
    statements = [*body, (BPF_RET_K, SECCOMP_RET_ERRNO | EPERM, 0, 0), (BPF_RET_K, SECCOMP_RET_ALLOW, 0, 0)]
    deny_at, allow_at = len(statements) - 2, len(statements) - 1

    def resolve(position: int, jump: int | str) -> int:
        if isinstance(jump, int):
            return jump
        return (allow_at if jump == ALLOW else deny_at) - position - 1

    compiled = [_statement(BPF_JEQ_K, number, jf=len(statements))]
    compiled += [
        _statement(code, k, resolve(position, jt), resolve(position, jf))
        for position, (code, k, jt, jf) in enumerate(statements)
    ]
    return compiled


def _own_process_only(number: int, rule: OwnProcessOnly) -> list[bytes]:
    body: list[tuple[int, int, int | str, int | str]] = []
    if rule.selector is not None:
        body += [(BPF_LD_W_ABS, _argument_offset(rule.selector[0]), 0, 0), (BPF_JEQ_K, rule.selector[1], 0, DENY)]
    body += [(BPF_LD_W_ABS, _argument_offset(rule.argument), 0, 0)]
    if rule.zero_is_self:
        body += [(BPF_JEQ_K, OWN_PID, ALLOW, 0), (BPF_JEQ_K, 0, ALLOW, DENY)]
    else:
        body += [(BPF_JEQ_K, OWN_PID, ALLOW, DENY)]
    return _block(number, body)


def _refused_values(number: int, argument: int, denied: tuple[int, ...]) -> list[bytes]:
    """The syscall is refused when its argument `argument` is one of `denied`."""
    body: list[tuple[int, int, int | str, int | str]] = [(BPF_LD_W_ABS, _argument_offset(argument), 0, 0)]
    body += [
        (BPF_JEQ_K, option, DENY, 0 if position < len(denied) - 1 else ALLOW) for position, option in enumerate(denied)
    ]
    return _block(number, body)


def seccomp_program(machine: str) -> bytes:
    """A BPF filter for `machine`. The process's own pid is left as OWN_PID, filled in by each child."""
    if machine not in MACHINES:
        raise OSError(f"no seccomp filter for the {machine} architecture")
    column = MACHINES.index(machine)
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
    for numbers in DENIED_SYSCALLS.values():
        number = numbers[column]
        if number is not None:
            program += [_statement(BPF_JEQ_K, number, jf=1), deny]
    # clone3 cannot be inspected (its flags live in memory): make libc fall back to clone.
    program += [_statement(BPF_JEQ_K, CLONE3, jf=1), _statement(BPF_RET_K, SECCOMP_RET_ERRNO | ENOSYS)]
    # clone: only threads (CLONE_THREAD set).
    program += _block(
        CLONE[machine], [(BPF_LD_W_ABS, _argument_offset(0), 0, 0), (BPF_JSET_K, CLONE_THREAD, ALLOW, DENY)]
    )
    for rule, syscalls in OWN_PROCESS_SYSCALLS.items():
        for numbers in syscalls.values():
            program += _own_process_only(numbers[column], rule)
    program += _refused_values(PRCTL[machine], 0, DENIED_PRCTL_OPTIONS)
    program += _refused_values(FCNTL[machine], 1, DENIED_FCNTL_COMMANDS)
    program.append(allow)
    return b"".join(program)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _Filter:
    """The filter program in memory, built once (by the fork server) so that a child only writes its pid into it."""

    def __init__(self, program: bytes) -> None:
        self._pid_offsets = [
            offset + 4  # the comparison's operand follows its code (2 bytes) and jumps (1 + 1)
            for offset in range(0, len(program), 8)
            if struct.unpack_from("HBBI", program, offset)[::3] == (BPF_JEQ_K, OWN_PID)
        ]
        self._program = bytearray(program)
        self._buffer = (ctypes.c_char * len(program)).from_buffer(self._program)
        self._fprog = _SockFprog(len(program) // 8, ctypes.addressof(self._buffer))

    def install(self) -> None:
        pid = struct.pack("I", os.getpid())
        for offset in self._pid_offsets:
            self._program[offset : offset + 4] = pid
        if (
            _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
            or _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self._fprog), 0, 0) < 0
        ):
            error = ctypes.get_errno()
            raise OSError(error, f"installing the seccomp filter failed: {os.strerror(error)}")


@functools.cache
def _filter() -> _Filter:
    return _Filter(seccomp_program(platform.machine()))


def prepare() -> None:
    """Builds the filter now (the fork server does, before forking), so children only fill in their pid."""
    with contextlib.suppress(OSError):
        _filter()


def install() -> None:
    """Confines this process (raises OSError where the machine cannot)."""
    _filter().install()
