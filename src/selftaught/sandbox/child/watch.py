"""Reports what generated code attempts against the sandbox, through a Python audit hook.

The kernel layers (isolation.py, seccomp.py) are what stop an attempt; this hook only tells the
host that it happened, so each attempt is recorded against the candidate that made it. Audit
hooks cannot be removed from Python code, and nothing generated code can reach changes this one:

- it is made of sealed functions (`_seal`): no closure, no global or builtin name looked up when
  they run, everything they use in one tuple default of objects that cannot change (built-in
  functions and descriptors taken once, numbers, strings, frozensets, other sealed functions).
  Walking `gc`, or a frame of the hook taken by a signal handler, hands generated code nothing it
  could rebind; replacing a sealed function's defaults or code is an audited assignment, on which
  the child is stopped. Only the count of reports per kind is a mutable object, and it only
  decides when a flood stops the child;
- it keeps no state of its own ("am I already running?"): the frames it takes for itself are
  recognised by their file, so no flag generated code could set turns it off;
- it reports on its own descriptor of the channel with `os.write`, after checking the descriptor
  is still that channel (a child that points it elsewhere is stopped on the spot), each report a
  packet of its own that the host never takes for part of another message: no lock to wait for;
- it calls no method and reads no attribute of the objects generated code hands to an audited
  call: strings, bytes and numbers are copied as their exact built-in types first, by the C level
  alone, so no code of the candidate ever runs inside the hook;
- a trace or profile function (called in every frame, the hook's too, and able to rewrite its
  variables) stops the child; another audit hook is refused; walking `gc` is reported first;
- rebinding a name of the sandbox's modules, or the code of their functions, is reported as
  `tampering`;
- frames taken by generated code are reported as `introspection`: through a traceback or a
  generator, with `sys._getframe` or `sys._current_frames`, or through the helpers of the standard
  library that hand a frame on (FRAME_HELPERS). Code is the candidate's unless its file is under a
  folder of the interpreter's path (the standard library, the sandbox, the allowed packages), and
  code the candidate compiles or builds under such a file's name is reported as `tampering`; the
  standard library's own uses (logging, warnings, namedtuple, typing) are not reported;
- each kind of attempt is reported up to REPORTS_PER_KIND times; one more stops the child, so a
  flood of decoys can hide nothing behind it.
"""

from __future__ import annotations

import os
import sys
import types
from _json import encode_basestring_ascii as escape_json  # the C one: the Python one looks up rebindable names
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import protocol

#: Attempts of one kind reported; the next one stops the child.
REPORTS_PER_KIND = 50

NETWORK = frozenset({"socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto"})
PROCESSES = frozenset(
    {"os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen"}
)
SIGNALS = frozenset({"os.kill", "os.killpg", "signal.pthread_kill"})
INTROSPECTION = frozenset({"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames"})
#: A function called in every frame, the hook's own included, which may rewrite its variables: stops the child.
TRACING = frozenset({"sys.settrace", "sys.setprofile", "sys.monitoring.register_callback"})
#: Attributes whose reading hands out a frame (and through it every caller's variables).
FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
#: Functions of the standard library that hand their caller a frame (file under the library's folder,
#: function, what the report calls it); one may call another (inspect.trace calls getinnerframes).
FRAME_HELPERS = (
    ("inspect.py", "currentframe", "inspect.currentframe"),
    ("inspect.py", "stack", "inspect.stack"),
    ("inspect.py", "trace", "inspect.trace"),
    ("inspect.py", "getouterframes", "inspect.getouterframes"),
    ("inspect.py", "getinnerframes", "inspect.getinnerframes"),
    ("inspect.py", "getgeneratorlocals", "inspect.getgeneratorlocals"),
    ("logging/__init__.py", "<lambda>", "logging.currentframe"),
    ("traceback.py", "walk_stack", "traceback.walk_stack"),
    ("traceback.py", "walk_tb", "traceback.walk_tb"),
)
NATIVE = frozenset({"ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "mmap.__new__"})
#: Events that make code, and the argument that names its file.
COMPILING = {"compile": 1, "code.__new__": 1}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
WRITE_MODES = frozenset("wax+")
#: The file name of generated code (runner.load_entry_point compiles it so).
GENERATED = "<generated>"
#: The audit event the sandbox's modules raise when a name in one of them is rebound.
TAMPERING = "selftaught.tampering"
#: The sandbox's own modules in the child: rebinding anything in them, or their functions' code, is tampering.
RUNTIME_MODULES = ("watch", "runner", "proxies", "protocol", "isolation", "seccomp", "helpers")
#: The names the runtime calls while generated code runs; rebinding one through a module's __dict__ is seen too.
WATCHED_NAMES = {
    "watch": ("install", "REPORTS_PER_KIND"),
    "runner": (
        "serve_job", "run_algorithm", "run_improver", "send_outputs", "finish", "finish_with", "decode_argument",
        "describe_failure", "seed_generators", "raise_timeout", "yield_to_host", "JOBS", "perf_counter", "audit",
    ),
    "proxies": ("Channel", "LanguageModel", "Utility", "BUDGET_ATTRIBUTES"),
    "protocol": ("frame", "send_frames", "send_message", "FrameReader", "encode_value", "HEADER"),
}  # fmt: skip


# The hook's functions. Each takes what it uses as its last parameter, `bound`, a tuple that `_seal`
# fills once; none of them looks up a global or builtin name (a test reads their bytecode for it).


def plain(value: Any, bound: tuple[Any, ...] = ()) -> Any:
    """An exact built-in copy of a string, bytes or integer (whatever subclass carries it); anything else as None.

    Only the C level is asked: `type()` cannot be faked and `issubclass` on two classes reads their
    MRO, where `isinstance` would read a `__class__` the candidate's class may compute, and
    `memoryview` would call a `__buffer__` it may define.
    """
    kind_of, subclass, text, data, buffer, number, everything = bound
    kind = kind_of(value)
    if subclass(kind, text):
        return text.__str__(value)
    if subclass(kind, data):
        return data.__getitem__(value, everything)
    if subclass(kind, buffer):
        return data(buffer.__getitem__(value, everything))
    if subclass(kind, number):
        return number.__int__(value)
    return None


def short(args: tuple[Any, ...], bound: tuple[Any, ...] = ()) -> str:
    """The first arguments of an event as a short text, from their exact copies."""
    plain, kind_of, number, show = bound
    shown: list[str] = []
    for value in args[:4]:
        copy = plain(value)
        if kind_of(copy) is number and not -(10**60) < copy < 10**60:
            shown += ["<a very large integer>"]  # its repr would be refused past 4,300 digits
        elif copy is not None:
            shown += [show(copy)[:60]]
        else:
            shown += ["None" if value is None else "<object>"]
    return "(" + ", ".join(shown) + ")"


def absolute(path: str, bound: tuple[Any, ...] = ()) -> str:
    """The path made absolute and normalized, with no help from os.path (whose module code can be rebound)."""
    (current_directory,) = bound
    parts: list[str] = []
    for part in (path if path.startswith("/") else current_directory() + "/" + path).split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/" + "/".join(parts)


def classify(event: str, args: tuple[Any, ...], bound: tuple[Any, ...] = ()) -> tuple[str, str] | None:
    """(kind, detail) for an event that attempts to leave the sandbox or to reach into it, or None.

    `args` come from generated code: only their exact built-in copies (`plain`) are looked at.
    """
    scratch, sandbox_ids, plain, short, absolute, own_pid, identity, kind_of, count, types, constants = bound
    text, data, number = types
    network, processes, signals, introspection, native, tampering, write_flags, write_modes = constants
    if event in network:
        return "network", event + short(args)
    if event in processes:
        return "process_spawn", event + short(args)
    if event in signals and not (args and plain(args[0]) == own_pid()):
        return "signal", event + short(args)
    if event == "resource.prlimit" and args and plain(args[0]) not in (0, own_pid()):
        return "process_control", event + short(args)
    if event in introspection:
        return "introspection", event
    if event == tampering:
        detail: Any = plain(args[0]) if args else None
        return "tampering", detail[:300] if kind_of(detail) is text else "rebinds a name of the sandbox's modules"
    if event == "object.__setattr__" and count(args) > 1 and identity(args[0]) in sandbox_ids:
        return "tampering", "sets " + short(args[1:2]) + " of one of the sandbox's own objects"
    if event in native:
        return "native_code", event + short(args)
    if event == "open" and args:
        path = plain(args[0])
        if kind_of(path) is data:
            path = path.decode("utf-8", "surrogateescape")
        if kind_of(path) is not text:
            return None
        mode = plain(args[1]) if count(args) > 1 else None
        flags = plain(args[2]) if count(args) > 2 else 0
        if path.startswith("/proc/") and not path.startswith(("/proc/self/", "/proc/thread-self/")):
            return "secret_read", "open " + path[:200]
        writes = (kind_of(mode) is text and not write_modes.isdisjoint(mode)) or (
            kind_of(flags) is number and flags & write_flags != 0
        )
        where = absolute(path)
        if writes and not (where == scratch or where.startswith(scratch + "/")):
            return "file_write", "open " + path[:200] + " for writing"
    return None


def report(kind: str, detail: str, last: bool = False, bound: tuple[Any, ...] = ()) -> None:
    """Writes the report at once, in a packet of its own (which the host never takes for part of another
    message): no lock to wait for, so generated code that holds the channel's lock delays nothing."""
    descriptor, identity, write, status, leave, escape, to_bytes, count, failure, stopped, alone = bound
    body = '{"kind":"event","name":"sandbox_violation","detail":{"kind":' + escape(kind)
    payload = (body + ',"detail":' + escape(detail[:300]) + "}}").encode("ascii")
    try:
        current = status(descriptor)
        if (current.st_dev, current.st_ino) != identity:
            leave(stopped)  # its channel was pointed elsewhere: nothing it does could be reported
        write(descriptor, to_bytes(count(payload), 4, "big") + alone + payload)
    except failure:
        leave(stopped)
    if last:
        leave(stopped)


def emit(kind: str, detail: str, bound: tuple[Any, ...] = ()) -> None:
    """Reports an attempt; one past the limit of its kind stops the child, so no flood of decoys hides another."""
    sent, limit, report = bound
    number = sent.get(kind, 0) + 1
    sent[kind] = number
    if number <= limit:
        report(kind, detail)
    else:
        report(kind, "more attempts of this kind than the reporter reports; the child was stopped", True)


def check_bindings(bound: tuple[Any, ...] = ()) -> None:
    """Reports, once each, the names the runtime calls that were rebound behind the modules' guard."""
    watched, tampered, emit = bound
    for get, key, original in watched:
        if get(key) is not original and key not in tampered:
            tampered.add(key)
            emit("tampering", "rebinds " + key + " in the sandbox's modules")


def caller_of_frame(frame: Any, bound: tuple[Any, ...] = ()) -> tuple[bool, str]:
    """Whether the frame that raised an event, or the code a chain of FRAME_HELPERS in it hands the frame to,
    is the candidate's; and through which helper."""
    own_file, trusted, helpers, code_of, back_of, file_of, name_of, exact = bound
    while frame is not None and exact(file_of(code_of(frame))) == own_file:
        frame = back_of(frame)
    helper = ""
    while frame is not None:
        file = exact(file_of(code_of(frame)))
        if not file.startswith(trusted):
            return True, helper
        function = exact(name_of(code_of(frame)))
        for helper_file, helper_function, name in helpers:
            if helper_file == file and helper_function == function:
                helper = name
                break
        else:
            return False, ""
        frame = back_of(frame)
    return False, ""


def on_event(event: str, args: tuple[Any, ...], bound: tuple[Any, ...] = ()) -> None:
    own_file, take_frame, code_of, file_of, exact, kind_of, identity, count, runtime_types, checks, sealed = bound
    frame_type, function_type, code_type, text, data = runtime_types
    function_code, sealed_codes, attributes, tracing, compiling, trusted, refusal = checks
    check_bindings, classify, emit, report, caller_of_frame, plain = sealed
    if (
        event == "sys._getframe"
        and count(args)
        and kind_of(args[0]) is frame_type
        and exact(file_of(code_of(args[0]))) == own_file
    ):
        return  # the hook's own look at the stack
    check_bindings()
    if event in tracing:
        report("introspection", event + ": a function called in every frame; the child was stopped", True)
    if event == "sys.addaudithook":
        emit("tampering", "adds an audit hook of its own (refused)")
        raise refusal("the sandbox allows no other audit hook")
    if (
        event == "object.__setattr__"
        and count(args) > 1
        and kind_of(args[0]) is function_type
        and identity(function_code(args[0])) in sealed_codes
    ):
        report("tampering", "changes a function of the sandbox's reporter; the child was stopped", True)
    if event == "object.__getattr__" or event == "sys._getframe":
        if event == "object.__getattr__" and not (count(args) > 1 and args[1] in attributes):
            return
        generated, helper = caller_of_frame(take_frame(0))
        if generated:
            how = ("reads " + args[1]) if event == "object.__getattr__" else "sys._getframe"
            emit("introspection", helper or how)
        return
    if event in compiling or event == "function.__new__":
        code = args[0] if event == "function.__new__" and count(args) else None
        named = exact(file_of(code)) if kind_of(code) is code_type else plain(args[compiling.get(event, 0)])
        if kind_of(named) is data:
            named = named.decode("utf-8", "replace")
        if kind_of(named) is text and named.startswith(trusted) and caller_of_frame(take_frame(0))[0]:
            emit("tampering", event + " under the name of " + named[:200])
        return
    found = classify(event, args)
    if found is not None:
        emit(found[0], found[1])


def hook(event: str, args: tuple[Any, ...], bound: tuple[Any, ...] = ()) -> None:
    """The audit hook: a reporting failure never changes what generated code sees, and never goes unreported."""
    on_event, report, failure, ordinary, refusal, kind_of, subclass = bound
    try:
        on_event(event, args)
    except failure as error:
        if kind_of(error) is refusal or not subclass(kind_of(error), ordinary):
            raise  # the refusal of another hook, or an interruption (an instance's time is up) goes on
        report("tampering", event + ": the reporter could not read what it was given")


class _Refused(RuntimeError):
    """Raised by the hook on `sys.addaudithook`: Python then adds no hook, and the caller sees nothing."""


def _seal(function: Callable[..., Any], *bound: Any) -> Callable[..., Any]:
    """A copy of a function of this module that uses only `bound`, given as its last parameter's default.

    Its globals hold nothing (not even the builtins), so a name it looked up would fail at once
    instead of reading something generated code can rebind.
    """
    defaults = (*(function.__defaults__ or ())[:-1], bound)
    return types.FunctionType(function.__code__, {"__builtins__": {}}, function.__name__, defaults)


SEALED = (plain, short, absolute, classify, report, emit, check_bindings, caller_of_frame, on_event, hook)


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

    #: (the module's dict.get, a name, the object it must stay bound to)
    watched: tuple[tuple[Callable[[str], Any], str, Any], ...]
    #: Identities of the sandbox's own functions, classes and modules.
    sandbox_ids: frozenset[int]


_shared: list[_Shared] = []


def prepare(guarded: tuple[str, ...] = RUNTIME_MODULES) -> None:
    """Takes what the hook watches and guards the sandbox's modules; the fork server calls it before forking."""
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
    _shared.append(_Shared(watched, sandbox_ids))
    for module in modules:
        module.__class__ = _GuardedModule


def trusted_folders(scratch: str) -> tuple[str, ...]:
    """Where code that is not the candidate's lives: the interpreter's path (never the scratch folder)."""
    folders = {os.path.dirname(os.__file__)} | {path for path in sys.path if path.startswith("/")}
    inside = [folder.rstrip("/") + "/" for folder in folders]
    return (*sorted(f for f in inside if not (scratch + "/").startswith(f) and f != "/"), "<frozen ")


def install(sock: Any, scratch: str) -> None:
    """Reports each attempt as an `event` message on the channel `sock`, each in a packet of its own."""
    prepare()
    shared = _shared.pop()
    # A descriptor of the channel of the hook's own: generated code that rebinds the runner's socket to a
    # pipe, or closes it, does not reach this one, and one that reaches it too is caught by the check.
    descriptor = os.dup(sock.fileno())
    status = os.fstat(descriptor)
    frame_type, code_type, function_type = types.FrameType, types.CodeType, types.FunctionType
    code_of, back_of = frame_type.__dict__["f_code"].__get__, frame_type.__dict__["f_back"].__get__
    file_of, name_of = code_type.__dict__["co_filename"].__get__, code_type.__dict__["co_name"].__get__
    function_code, exact = function_type.__dict__["__code__"].__get__, str.__str__
    library, trusted = os.path.dirname(os.__file__), trusted_folders(scratch)
    helpers = tuple((f"{library}/{file}", function, name) for file, function, name in FRAME_HELPERS)
    own_file = __file__
    reporter = _seal(
        report, descriptor, (status.st_dev, status.st_ino), os.write, os.fstat, os._exit,
        escape_json, int.to_bytes, len, BaseException,
        protocol.EXIT_STOPPED_BY_WATCH, protocol.ALONE_MARK,
    )  # fmt: skip
    plain_copy = _seal(plain, type, issubclass, str, bytes, bytearray, int, slice(None))
    short_text = _seal(short, plain_copy, type, int, repr)
    constants = (NETWORK, PROCESSES, SIGNALS, INTROSPECTION, NATIVE, TAMPERING, WRITE_FLAGS, WRITE_MODES)
    classifier = _seal(
        classify, scratch, shared.sandbox_ids, plain_copy, short_text, _seal(absolute, os.getcwd), os.getpid, id,
        type, len, (str, bytes, int), constants,
    )  # fmt: skip
    emitter = _seal(emit, {}, REPORTS_PER_KIND, reporter)
    checker = _seal(check_bindings, shared.watched, set(), emitter)
    caller = _seal(caller_of_frame, own_file, trusted, helpers, code_of, back_of, file_of, name_of, exact)
    sealed_codes = frozenset(id(function.__code__) for function in SEALED)
    checks = (function_code, sealed_codes, FRAME_ATTRIBUTES, TRACING, COMPILING, trusted, _Refused)
    dispatcher = _seal(
        on_event, own_file, sys._getframe, code_of, file_of, exact, type, id, len,
        (frame_type, function_type, code_type, str, bytes), checks,
        (checker, classifier, emitter, reporter, caller, plain_copy),
    )  # fmt: skip
    sys.addaudithook(_seal(hook, dispatcher, reporter, BaseException, Exception, _Refused, type, issubclass))
