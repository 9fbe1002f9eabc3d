"""Reports what generated code attempts against the sandbox, through a Python audit hook.

The kernel layers (isolation.py, seccomp.py) are what stop an attempt; this hook only tells the
host that it happened, so each attempt is recorded against the candidate that made it. Audit
hooks cannot be removed from Python code, and generated code cannot reach what this one uses:

- everything is bound when it is installed: its own copies of this module's names, of `os` and of
  the builtins, and its own descriptor of the channel, checked before every report to still be
  that channel (a child that points it elsewhere, to silence it, is stopped on the spot);
- none of it is left where generated code can reach it without an attempt of its own: not on
  this module (the parts built in the fork server leave it once installed), nor on the class of
  the sandbox's modules (which reports rebinding by raising the audit event TAMPERING, handled by
  the hook like any other), nor in defaults or closures of functions anything points to. The hook's
  own closures are reachable only by walking `gc`, which is reported before it returns;
- each report is sent at once in a packet of its own, which the host never takes for part of
  another message: it waits for no lock, so generated code holding the channel's lock delays nothing;
- it calls no method and reads no attribute of the objects generated code hands to an audited
  call: strings, bytes and numbers are copied as their exact built-in types first, and sandbox
  objects are recognised by identity, so no code of the candidate ever runs inside the hook;
- rebinding a name of the sandbox's modules, or the code of their functions, is reported as
  `tampering`;
- frames taken by generated code are reported as `introspection`: through a traceback or a
  generator, with `sys._getframe` or `sys._current_frames`, or through the helpers of the standard
  library that hand a frame on (FRAME_HELPERS); the standard library's own uses (logging, warnings,
  namedtuple, typing) are not. Code is generated code by its file name, GENERATED;
- each kind of attempt is reported up to REPORTS_PER_KIND times; one more stops the child, so a
  flood of decoys can hide nothing behind it.
"""

from __future__ import annotations

import builtins
import json
import os
import socket
import sys
import threading
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import protocol

#: Attempts of one kind reported; the next one stops the child.
REPORTS_PER_KIND = 50

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
#: Functions of the standard library that hand their caller a frame they take with sys._getframe:
#: (file under the library's folder, function, what the report calls it).
FRAME_HELPERS = (
    ("inspect.py", "currentframe", "inspect.currentframe"),
    ("inspect.py", "stack", "inspect.stack"),
    ("logging/__init__.py", "<lambda>", "logging.currentframe"),
    ("traceback.py", "walk_stack", "traceback.walk_stack"),
)
NATIVE = {"ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "mmap.__new__"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
#: The file name of generated code (runner.load_entry_point compiles it so).
GENERATED = "<generated>"
#: The audit event the sandbox's modules raise when a name in one of them is rebound.
TAMPERING = "selftaught.tampering"
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


def classify(event: str, args: tuple[Any, ...], scratch: str, sandbox_ids: frozenset[int]) -> tuple[str, str] | None:
    """(kind, detail) for an event that attempts to leave the sandbox or to reach into it, or None.

    `args` come from generated code: only their exact built-in copies (`_plain`) are looked at.
    """
    if event in NETWORK:
        return "network", f"{event}{_short(args)}"
    if event in PROCESSES:
        return "process_spawn", f"{event}{_short(args)}"
    if event in SIGNALS and not (args and _plain(args[0]) == os.getpid()):
        return "signal", f"{event}{_short(args)}"
    if event == "resource.prlimit" and args and _plain(args[0]) not in (0, os.getpid()):
        return "process_control", f"{event}{_short(args)}"
    if event in INTROSPECTION:
        return "introspection", event
    if event == TAMPERING:
        detail = _plain(args[0]) if args else None
        return "tampering", detail[:300] if type(detail) is str else "rebinds a name of the sandbox's modules"
    if event == "object.__setattr__" and len(args) > 1 and id(args[0]) in sandbox_ids:
        return "tampering", f"sets {_short(args[1:2])} of one of the sandbox's own objects"
    if event in NATIVE:
        return "native_code", f"{event}{_short(args)}"
    if event == "open" and args:
        path = _plain(args[0])
        if type(path) is bytes:
            path = path.decode("utf-8", "surrogateescape")
        if type(path) is not str:
            return None
        mode = _plain(args[1]) if len(args) > 1 else None
        flags = _plain(args[2]) if len(args) > 2 else 0
        if path.startswith("/proc/") and not path.startswith(("/proc/self/", "/proc/thread-self/")):
            return "secret_read", f"open {path[:200]}"
        writes = (type(mode) is str and any(c in mode for c in "wax+")) or (
            type(flags) is int and bool(flags & WRITE_FLAGS)
        )
        absolute = _absolute(path)
        if writes and not (absolute == scratch or absolute.startswith(scratch + "/")):
            return "file_write", f"open {path[:200]} for writing"
    return None


def _plain(value: Any) -> Any:
    """An exact built-in copy of a string, bytes or integer (whatever subclass carries it); anything else as None."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(memoryview(value))
    if isinstance(value, int):
        return int.__int__(value)
    return None


def _short(args: tuple[Any, ...]) -> str:
    shown = []
    for value in args[:4]:
        plain = _plain(value)
        shown.append(repr(plain)[:60] if plain is not None else "<object>" if value is not None else "None")
    return "(" + ", ".join(shown) + ")"


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


def _private(functions: Iterable[Callable[..., Any]]) -> dict[str, Any]:
    """The functions bound to private copies of everything they look up: this module's names, os, the builtins.

    Generated code shares this module, os and builtins with the hook; rebinding a name in any of
    them (`watch.SIGNALS = set()`, `os.getpid = ...`, `builtins.isinstance = ...`) must change nothing here.
    """
    namespace: dict[str, Any] = {
        name: frozenset(value) if isinstance(value, (set, frozenset, tuple)) else value
        for name, value in globals().items()
        if name.isupper()
    }
    namespace["os"] = types.SimpleNamespace(getpid=os.getpid, getcwd=os.getcwd)
    namespace["__builtins__"] = dict(builtins.__dict__)
    for function in functions:
        namespace[function.__name__] = types.FunctionType(function.__code__, namespace, function.__name__)
    return namespace


class _GuardedModule(types.ModuleType):
    """The class given to the sandbox's own modules: rebinding a name in one is reported before it happens.

    It reports by raising the audit event TAMPERING, which the hook handles like any other: nothing
    of the hook is stored here, where generated code could reach it (rebinding `_audit` is itself
    reported, the class being one of the sandbox's own objects). Generated code may raise that event
    itself: that only reports more.
    """

    _audit = sys.audit

    def __setattr__(self, name: str, value: Any) -> None:
        type(self)._audit(TAMPERING, f"rebinds {self.__name__}.{name}")
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        type(self)._audit(TAMPERING, f"deletes {self.__name__}.{name}")
        super().__delattr__(name)


@dataclass(frozen=True)
class _Shared:
    """What every child's hook uses and no child changes: built once, in the fork server, before it forks."""

    classify: Callable[[str, tuple[Any, ...], str, frozenset[int]], tuple[str, str] | None]
    #: (the module's dict.get, a name, the object it must stay bound to)
    watched: tuple[tuple[Callable[[str], Any], str, Any], ...]
    #: Identities of the sandbox's own functions, classes and modules.
    sandbox_ids: frozenset[int]
    encode: Callable[[Any], str]
    pack: Callable[..., bytes]


_shared: list[_Shared] = []


def prepare(guarded: tuple[str, ...] = RUNTIME_MODULES) -> None:
    """Builds the hook's shared parts and guards the sandbox's modules; the fork server calls it before forking.

    Done once there, the copies of the builtins and of this module's names are shared by every child
    instead of being made again (and paid for in copied pages) in each.
    """
    if _shared:
        return
    modules = [sys.modules[name] for name in guarded if name in sys.modules]
    watched = tuple(
        (module.__dict__.get, key, module.__dict__[key])
        for module in modules
        for key in WATCHED_NAMES.get(module.__name__, ())
        if key in module.__dict__
    )
    own = [
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, (types.FunctionType, type)) and getattr(value, "__module__", None) in guarded
    ]
    # The functions of its classes too (their code or defaults rebound is tampering as well).
    methods = [
        getattr(member, "__func__", member)
        for value in own
        if isinstance(value, type)
        for member in vars(value).values()
        if isinstance(getattr(member, "__func__", member), types.FunctionType)
    ]
    sandbox_ids = frozenset({id(module) for module in modules} | {id(value) for value in own + methods})
    encode = json.JSONEncoder(separators=(",", ":"), default=repr).encode
    private = _private((classify, _plain, _short, _absolute))
    _shared.append(_Shared(private["classify"], watched, sandbox_ids, encode, protocol.HEADER.pack))
    for module in modules:
        module.__class__ = _GuardedModule


def install(sock: socket.socket, scratch: str) -> None:
    """Reports each attempt as an `event` message on the channel `sock`, each in a packet of its own.

    Everything the hook needs is bound here, before generated code runs: the functions below look
    up no module or builtin name when they run, only what this call gave them. That is why they are
    closures of one long function: as module-level functions they would be names generated code
    can rebind.
    """
    prepare()
    shared = _shared.pop()  # from now on reachable only from the hook's closures
    # A descriptor of the channel of the hook's own: generated code that rebinds the runner's one to a
    # pipe, or closes it, does not reach this one, and one that reaches it too is caught by the check.
    reporter = socket.socket(fileno=os.dup(sock.fileno()))
    send, descriptor, stat, stop = reporter.send, reporter.fileno(), os.fstat, os._exit
    identity = (stat(descriptor).st_dev, stat(descriptor).st_ino)
    classify_event, watched, sandbox_ids = shared.classify, shared.watched, shared.sandbox_ids
    encode, pack = shared.encode, shared.pack
    limit, stopped_code, alone = REPORTS_PER_KIND, protocol.EXIT_STOPPED_BY_WATCH, protocol.ALONE_TAIL
    get_frame, generated, own_file = sys._getframe, GENERATED, __file__
    get_attribute, length, failure = getattr, len, BaseException
    library = os.path.dirname(os.__file__)
    frame_helpers = {(f"{library}/{file}", function): name for file, function, name in FRAME_HELPERS}
    state = threading.local()
    sent: dict[str, int] = {}
    tampered: set[str] = set()

    def report(kind: str, detail: str, last: bool = False) -> None:
        """Sends the report at once, in a packet of its own (which the host never takes for part of another
        message): no lock to wait for, so generated code that holds the channel's lock delays nothing."""
        body = {"kind": "event", "name": "sandbox_violation", "detail": {"kind": kind, "detail": detail[:300]}}
        payload = encode(body).encode("utf-8", "replace")
        packet = pack(length(payload), alone) + payload
        try:
            current = stat(descriptor)
            if (current.st_dev, current.st_ino) != identity:
                stop(stopped_code)  # its channel was pointed elsewhere: nothing it does could be reported
            send(packet)
        except failure:
            stop(stopped_code)
        if last:
            stop(stopped_code)

    def emit(kind: str, detail: str) -> None:
        count = sent.get(kind, 0) + 1
        sent[kind] = count
        if count <= limit:
            report(kind, detail)
        else:  # a flood of attempts, decoys or not: the child goes, so none of them hides another
            report(kind, f"more than {limit} attempts of this kind; the child was stopped", last=True)

    def check_bindings() -> None:
        for get, key, original in watched:
            if get(key) is not original and key not in tampered:
                tampered.add(key)
                emit("tampering", f"rebinds {key} in the sandbox's modules")

    def raiser() -> types.FrameType | None:
        """The frame of the code that raised the event being handled (this module's own frames passed over)."""
        frame: types.FrameType | None = get_frame(3)  # 0: here, 1: on_event, 2: guarded_call
        while frame is not None and frame.f_code.co_filename == own_file:
            frame = frame.f_back
        return frame

    def from_generated_code() -> bool:
        """Whether the code that raised the event is the candidate's own (the standard library reads frames too)."""
        frame = raiser()
        return frame is not None and frame.f_code.co_filename == generated

    def frame_taker() -> str | None:
        """Who took a frame with sys._getframe, when it is generated code: itself, or through a helper of the
        standard library that hands the frame on (logging, warnings, namedtuple, typing take theirs for
        themselves: not reported)."""
        frame = raiser()
        if frame is None:
            return None
        code = frame.f_code
        if code.co_filename == generated:
            return "sys._getframe"
        helper = frame_helpers.get((code.co_filename, code.co_name))
        caller = frame.f_back
        if helper is not None and caller is not None and caller.f_code.co_filename == generated:
            return helper
        return None

    def on_event(event: str, args: tuple[Any, ...]) -> None:
        check_bindings()
        if event == "object.__getattr__":
            if length(args) > 1 and args[1] in FRAME_ATTRIBUTES and from_generated_code():
                emit("introspection", f"reads {args[1]}")
            return
        if event == "sys._getframe":
            taker = frame_taker()
            if taker is not None:
                emit("introspection", taker)
            return
        found = classify_event(event, args, scratch, sandbox_ids)
        if found is not None:
            emit(*found)

    def guarded_call(event: str, args: tuple[Any, ...]) -> None:
        if get_attribute(state, "busy", False):
            return
        state.busy = True
        try:
            on_event(event, args)
        except failure:  # a reporting failure must never change what generated code sees
            pass
        finally:
            state.busy = False

    sys.addaudithook(guarded_call)
