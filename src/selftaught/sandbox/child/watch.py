"""Reports what generated code attempts against the sandbox, through a Python audit hook.

The kernel layers (isolation.py) are what stop an attempt; this hook only tells the host that it
happened, so each attempt is recorded against the candidate that made it. Audit hooks cannot be
removed from Python code, and generated code cannot reach what this one uses: everything is bound
when it is installed (its own copy of this module's globals, the socket's own send method, a
ready-made JSON encoder), so rebinding names in this module, the runner or the proxies changes
nothing. Rebinding them is reported as `tampering`, as is reaching for the frames or the code of
the sandbox's own functions; a flood of one kind of attempt cannot hide the others.
"""

from __future__ import annotations

import builtins
import json
import os
import struct
import sys
import threading
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

#: Reports sent per kind of attempt; after that only a running count at 2x, 4x, 8x ... of it.
REPORTS_PER_KIND = 20

NETWORK = {"socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto"}
PROCESSES = {"os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen"}
SIGNALS = {"os.kill", "os.killpg", "signal.pthread_kill"}
INTROSPECTION = {
    "gc.get_objects",
    "gc.get_referrers",
    "gc.get_referents",
    "sys._current_frames",
    "sys.settrace",
    "sys.setprofile",
}
#: Attributes whose reading hands out a frame (and through it every caller's variables).
FRAME_ATTRIBUTES = {"tb_frame", "gi_frame", "cr_frame", "ag_frame"}
NATIVE = {"ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "mmap.__new__"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
#: The sandbox's own modules in the child: rebinding anything in them, or their functions' code, is tampering.
RUNTIME_MODULES = ("watch", "runner", "proxies", "protocol", "isolation", "seccomp", "helpers")
#: The names the runtime calls while generated code runs; rebinding one through a module's __dict__ is seen too.
WATCHED_NAMES = {
    "watch": ("classify", "install", "REPORTS_PER_KIND", "NETWORK", "PROCESSES", "SIGNALS", "INTROSPECTION", "NATIVE"),
    "runner": (
        "serve_job", "run_algorithm", "run_improver", "send_outputs", "finish", "finish_with", "decode_argument",
        "describe_failure", "seed_generators", "raise_timeout", "yield_to_host", "JOBS", "perf_counter", "audit",
    ),
    "proxies": ("Channel", "LanguageModel", "Utility", "BUDGET_ATTRIBUTES"),
    "protocol": ("frame", "send_frames", "send_message", "FrameReader", "encode_value", "HEADER"),
}  # fmt: skip


def classify(event: str, args: tuple[Any, ...], scratch: str) -> tuple[str, str] | None:
    """(kind, detail) for an event that attempts to leave the sandbox or to reach into it, or None."""
    if event in NETWORK:
        return "network", f"{event}{_short(args)}"
    if event in PROCESSES:
        return "process_spawn", f"{event}{_short(args)}"
    if event in SIGNALS and not (args and args[0] == os.getpid()):
        return "signal", f"{event}{_short(args)}"
    if event == "resource.prlimit" and args and args[0] not in (0, os.getpid()):
        return "process_control", f"{event}{_short(args)}"
    if event in INTROSPECTION:
        return "introspection", event
    if event == "object.__getattr__" and len(args) > 1 and args[1] in FRAME_ATTRIBUTES:
        return "introspection", f"reads {args[1]}"
    if event == "object.__setattr__" and len(args) > 1 and getattr(args[0], "__module__", None) in RUNTIME_MODULES:
        return "tampering", f"sets {args[1]} of the sandbox's {getattr(args[0], '__qualname__', '?')}"
    if event in NATIVE:
        return "native_code", f"{event}{_short(args)}"
    if event == "open" and args and isinstance(args[0], (str, bytes)):
        path = args[0] if isinstance(args[0], str) else args[0].decode("utf-8", "surrogateescape")
        mode, flags = (args[1] if len(args) > 1 else None), (args[2] if len(args) > 2 else 0)
        if path.startswith("/proc/") and not path.startswith(("/proc/self/", "/proc/thread-self/")):
            return "secret_read", f"open {path}"
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
        absolute = _absolute(path)
        if writes and not (absolute == scratch or absolute.startswith(scratch + "/")):
            return "file_write", f"open {path} for writing"
    return None


def _short(args: tuple[Any, ...]) -> str:
    return repr(args)[:150]


def _absolute(path: str) -> str:
    """The path made absolute and normalized, with no help from os.path (whose module code can be rebound)."""
    parts: list[str] = []
    for part in (path if path.startswith("/") else os.getcwd() + "/" + path).split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/" + "/".join(parts)


def _private_classify() -> Callable[[str, tuple[Any, ...], str], tuple[str, str] | None]:
    """`classify` bound to private copies of everything it looks up: this module's names, os, the builtins.

    Generated code shares this module, os and builtins with the hook; rebinding a name in any of
    them (`watch.SIGNALS = set()`, `os.getpid = ...`, `builtins.isinstance = ...`) must change nothing here.
    """
    snapshot = types.SimpleNamespace(getpid=os.getpid, getcwd=os.getcwd, fsdecode=os.fsdecode, O_WRONLY=os.O_WRONLY)
    namespace: dict[str, Any] = {
        name: frozenset(value) if isinstance(value, (set, frozenset, tuple)) else value
        for name, value in globals().items()
        if name.isupper()
    }
    namespace["os"] = snapshot
    namespace["__builtins__"] = dict(builtins.__dict__)
    for function in (classify, _short, _absolute):
        namespace[function.__name__] = types.FunctionType(function.__code__, namespace, function.__name__)
    return namespace["classify"]  # type: ignore[no-any-return]


class _GuardedModule(types.ModuleType):
    """The class given to the sandbox's own modules: rebinding a name in one is reported before it happens."""

    _report_tampering: Callable[[str], None] = staticmethod(lambda detail: None)

    def __setattr__(self, name: str, value: Any) -> None:
        type(self)._report_tampering(f"rebinds {self.__name__}.{name}")
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        type(self)._report_tampering(f"deletes {self.__name__}.{name}")
        super().__delattr__(name)


@dataclass(frozen=True)
class _Shared:
    """What every child's hook uses and no child changes: built once, in the fork server, before it forks."""

    classify: Callable[[str, tuple[Any, ...], str], tuple[str, str] | None]
    #: (the module's dict.get, a name, the object it must stay bound to)
    watched: tuple[tuple[Callable[[str], Any], str, Any], ...]
    encode: Callable[[Any], str]
    pack: Callable[..., bytes]


_shared: list[_Shared] = []


def prepare(guarded: Iterable[str] = RUNTIME_MODULES) -> None:
    """Builds the hook's shared parts and guards the sandbox's modules; the fork server calls it before forking.

    Done once there, the copies of the builtins and of this module's names are shared by every child
    instead of being made again (and paid for in copied pages) in each.
    """
    if _shared:
        return
    modules = [sys.modules[name] for name in guarded if name in sys.modules]
    # Rebinding a name that bypasses the modules' own __setattr__ (through __dict__) is seen at the next event.
    watched = tuple(
        (module.__dict__.get, key, module.__dict__[key])
        for module in modules
        for key in WATCHED_NAMES.get(module.__name__, ())
        if key in module.__dict__
    )
    encode = json.JSONEncoder(separators=(",", ":"), default=repr).encode
    _shared.append(_Shared(_private_classify(), watched, encode, struct.Struct(">II").pack))
    for module in modules:
        module.__class__ = _GuardedModule


def install(sock: Any, lock: Any, scratch: str) -> None:
    """Reports each attempt as an `event` message on `sock`, whose writes `lock` serializes.

    Everything the hook needs is bound here, before generated code runs: the functions below look
    up no module or builtin name when they run, only what this call gave them.
    """
    prepare()
    shared = _shared[0]
    send = sock.send
    private_classify, watched, encode, pack = shared.classify, shared.watched, shared.encode, shared.pack
    owned, acquire, release = lock._is_owned, lock.acquire, lock.release
    limit = REPORTS_PER_KIND
    get_attribute, length, failure = getattr, len, Exception
    state = threading.local()
    sent: dict[str, int] = {}
    tampered: set[str] = set()
    pending: list[bytes] = []

    def emit(kind: str, detail: str) -> None:
        count = sent.get(kind, 0) + 1
        sent[kind] = count
        # Past the first reports of a kind, only its running count at each doubling: bounded, and never hidden.
        if count <= limit or (count & (count - 1)) == 0:
            body = {
                "kind": "event",
                "name": "sandbox_violation",
                "detail": {"kind": kind, "detail": detail[:300], "count": count},
            }
            payload = encode(body).encode("utf-8", "replace")
            pending.append(pack(length(payload), 0) + payload)
        if pending and not owned():  # never between the packets of a message this thread is sending
            acquire()
            try:
                while pending:
                    send(pending.pop(0))
            finally:
                release()

    def check_bindings() -> None:
        for get, key, original in watched:
            if get(key) is not original and key not in tampered:
                tampered.add(key)
                emit("tampering", f"rebinds {key} in the sandbox's modules")

    def guarded_call(report: Callable[[], None]) -> None:
        if get_attribute(state, "busy", False):
            return
        state.busy = True
        try:
            report()
        except failure:  # a reporting failure must never change what generated code sees
            pass
        finally:
            state.busy = False

    def report_tampering(detail: str) -> None:
        guarded_call(lambda: emit("tampering", detail))

    def on_event(event: str, args: tuple[Any, ...]) -> None:
        check_bindings()
        found = private_classify(event, args, scratch)
        if found is not None:
            emit(*found)

    _GuardedModule._report_tampering = staticmethod(report_tampering)
    sys.addaudithook(lambda event, args: guarded_call(lambda: on_event(event, args)))
