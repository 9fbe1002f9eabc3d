"""Reports what generated code attempts against the sandbox, through a Python audit hook.

The kernel layers (isolation.py, seccomp.py) are what stop an attempt; this hook only tells the
host that it happened, so each attempt is recorded against the candidate that made it. Audit
hooks cannot be removed from Python code, and nothing generated code can do in Python changes this
one (raw memory can: what reaches it through an audit event stops the child; docs/sandbox.md lists
the routes that raise none):

- it is made of sealed functions (sealed.py): no closure, no global or builtin name looked up when
  they run, everything they use in one tuple default of objects that cannot change (built-in
  functions and descriptors taken once, numbers, strings, frozensets, other sealed functions).
  Walking `gc`, or a frame of the hook taken by a signal handler, hands generated code nothing it
  could rebind; replacing a sealed function's defaults or code is an audited assignment, on which
  the child is stopped. Its only mutable state is the count of reports per kind (an array of machine
  integers), built in the fork server;
- it keeps no state of its own ("am I already running?"): the frames it takes for itself are
  recognised by their file, so no flag generated code could set turns it off;
- it reports on its own descriptor of the channel with `os.write`, after checking the descriptor
  is still that channel (a child that points it elsewhere is stopped on the spot), each report a
  packet of its own that the host never takes for part of another message: no lock to wait for;
- it calls no method and reads no attribute of the objects generated code hands to an audited
  call: strings, bytes and numbers are copied as their exact built-in types first, by the C level
  alone, so no code of the candidate ever runs inside the hook;
- a path is judged where it leads (sealed_paths.py): its links followed as the kernel would, a
  link's target again when the link is moved, relative paths even once the working directory is
  gone, `sqlite3.connect` like an open for writing, and a descriptor given for a path (fchmod,
  ftruncate, ...) by its file's device and owner. A path given as anything but a string or bytes
  (a memoryview, an array: `os` takes any buffer) is reported wherever it leads;
- what could reach into it stops the child (REACHES_THE_REPORTER: walking `gc`, native code, a trace
  or profile function, bytecode not compiled from source); ctypes is taken out of reach and its
  import refused; another audit hook and a sub-interpreter are refused;
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

import array
import os
import sys
import types
from _json import encode_basestring_ascii as escape_json  # the C one: the Python one looks up rebindable names
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import protocol
import sealed
import sealed_paths

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
#: Those of a generator or coroutine: the standard library reads them only when asked (a task's stack),
#: so any read while the candidate's code is on the stack is reported.
SUSPENDED_FRAMES = frozenset({"gi_frame", "cr_frame", "ag_frame"})
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
    ("traceback.py", "_walk_tb_with_full_positions", "traceback._walk_tb_with_full_positions"),
)
#: Native code or raw memory by other ways than ctypes (an SQLite extension is a shared library).
NATIVE = frozenset({"mmap.__new__", "sqlite3.enable_load_extension", "sqlite3.load_extension"})
#: Every `ctypes.*` event is native code; these run it or touch raw memory, which can rewrite anything in the
#: child, the reporter included: the child is stopped at the first (unless the policy only reports them).
NATIVE_RUNS = frozenset(
    {"ctypes.call_function", "ctypes.cdata", "ctypes.cdata/buffer", "ctypes.string_at", "ctypes.wstring_at"}
)
#: Modules of native code: out of the child's reach once it is confined, and not to be imported again.
NATIVE_MODULES = ("ctypes", "_ctypes", "_testcapi", "_testinternalcapi", "_xxsubinterpreters", "_xxinterpchannels")
#: Attempts that reach every object, the reporter's too, or run native code (which could rewrite the reporter):
#: the child is stopped at the first, unless the sandbox's policy only reports them.
REACHES_THE_REPORTER = (
    frozenset(
        {
            "gc.get_objects",
            "gc.get_referrers",
            "gc.get_referents",
            "ctypes.dlopen",
            "ctypes.dlsym",
            "ctypes.dlsym/handle",
            "sqlite3.load_extension",
        }
    )
    | NATIVE_RUNS
)
#: Events that change the file system: each argument that is a path, with the one that is its directory descriptor
#: (-1: none). Those of LINKS_FOLLOWED take a descriptor of the file instead of a path too (fchmod, ftruncate...).
FILE_CHANGES = {
    "os.mkdir": ((0, 2),), "os.rmdir": ((0, 1),), "os.remove": ((0, 1),), "os.rename": ((0, 2), (1, 3)),
    "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),), "os.chmod": ((0, 2),), "os.chown": ((0, 3),),
    "os.truncate": ((0, -1),), "os.utime": ((0, 3),), "os.setxattr": ((0, -1),), "os.removexattr": ((0, -1),),
}  # fmt: skip
#: Of those, the ones the kernel applies to where a link leads rather than to the link itself.
LINKS_FOLLOWED = frozenset({"os.truncate", "os.chmod", "os.chown", "os.utime", "os.setxattr", "os.removexattr"})
#: Events that make code from bytes rather than compiling it: its bytecode is never checked.
BYTECODE = frozenset({"code.__new__", "marshal.loads", "marshal.load"})
#: The runtime's own events, raised where it is about to call what WATCHED_NAMES name: the bindings are checked there.
CHECKED_AT = frozenset({"selftaught.outputs", "selftaught.finish"})
#: What the hook raises to refuse something (another hook, a sub-interpreter; an import of native code).
REFUSALS = (sealed.Refused, sealed.RefusedImport)
#: Every kind of report.
KINDS = (
    "network", "process_spawn", "signal", "process_control", "introspection", "tampering", "native_code",
    "secret_read", "file_write",
)  # fmt: skip
#: Events that make code; their second argument names its file.
COMPILING = frozenset({"compile", "code.__new__"})
#: Buffers a path may be given as, each with its slicing and copying, C methods that run no code of the candidate's.
BUFFERS = (
    (bytearray, bytearray.__getitem__, bytes),
    (memoryview, memoryview.__getitem__, memoryview.tobytes),
    (array.array, array.array.__getitem__, array.array.tobytes),
)
#: The working directory relative paths are judged against once it was removed: nowhere in scratch or in /proc.
REMOVED_FOLDER = "/(a removed working directory)"
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
WRITE_MODES = frozenset("wax+")
#: The audit event the sandbox's modules raise when a name in one of them is rebound.
TAMPERING = "selftaught.tampering"
#: The sandbox's own modules in the child: rebinding anything in them, or their functions' code, is tampering.
RUNTIME_MODULES = (
    "watch", "sealed", "sealed_paths", "runner", "proxies", "protocol", "isolation", "seccomp", "helpers",
)  # fmt: skip
#: The names the runtime calls while generated code runs; rebinding one through a module's __dict__ is seen too.
WATCHED_NAMES = {
    "runner": (
        "serve_job", "run_algorithm", "run_improver", "run_instance", "send_outputs", "finish", "finish_with",
        "decode_argument", "describe_failure", "seed_generators", "raise_timeout", "yield_to_host", "JOBS", "perf_counter", "audit",
    ),
    "proxies": ("Channel", "LanguageModel", "Utility", "BUDGET_ATTRIBUTES"),
    "protocol": ("frame", "send_frames", "send_message", "FrameReader", "encode_value", "HEADER"),
}  # fmt: skip


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
    """The hook, built once in the fork server before it forks (a child pays only for what is its own: its
    descriptor of the channel, its scratch folder); each child changes only its own copy of the counts."""

    #: The sealed event handler: stopping the child at what could reach into the reporter, or only reporting it.
    stopping: Callable[..., None]
    reporting: Callable[..., None]
    report: Callable[..., None]
    #: (a module's dict, a name in it) bound to something of ctypes: taken away before generated code runs.
    native_handles: tuple[tuple[dict[str, Any], str], ...]
    #: The modules of native code loaded: out of sys.modules before generated code runs.
    native_modules: tuple[str, ...]
    #: The folders of the interpreter's path, each ending in "/".
    path_folders: tuple[str, ...]


_shared: list[_Shared] = []


def prepare(guarded: tuple[str, ...] = RUNTIME_MODULES) -> None:
    """Builds the hook and guards the sandbox's modules; the fork server calls it before forking."""
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
    native_modules = tuple(name for name in sys.modules if _is_native(name))
    folders = {os.path.dirname(os.__file__)} | {path for path in sys.path if path.startswith("/")}
    path_folders = tuple(sorted(folder.rstrip("/") + "/" for folder in folders))
    dictionaries = tuple(vars(module) for module in modules if module.__name__ in WATCHED_NAMES)
    stopping, reporting, reporter = _handlers(watched, dictionaries, sandbox_ids)
    _shared.append(_Shared(stopping, reporting, reporter, _native_handles(), native_modules, path_folders))
    for module in modules:
        module.__class__ = _GuardedModule


def _handlers(
    watched: tuple[tuple[Callable[[str], Any], str, Any], ...],
    dictionaries: tuple[dict[str, Any], ...],
    sandbox_ids: frozenset[int],
) -> tuple[Callable[..., None], Callable[..., None], Callable[..., None]]:
    """The sealed event handlers (one stopping the child at what could reach into the reporter, one only
    reporting it) and the reporting function."""
    frame_type, code_type, function_type = types.FrameType, types.CodeType, types.FunctionType
    code_of, back_of = frame_type.__dict__["f_code"].__get__, frame_type.__dict__["f_back"].__get__
    file_of, name_of = code_type.__dict__["co_filename"].__get__, code_type.__dict__["co_name"].__get__
    function_code, exact = function_type.__dict__["__code__"].__get__, str.__str__
    library = os.path.dirname(os.__file__)
    helpers = (
        *((f"{library}/{file}", function, name) for file, function, name in FRAME_HELPERS),
        ("<frozen importlib._bootstrap_external>", "_compile_bytecode", "importlib's _compile_bytecode"),
    )
    own_file = sealed.__file__  # the hook's frames are recognised by it
    reporter = sealed.seal(
        sealed.report, os.write, os.fstat, os._exit, escape_json, int.to_bytes, len, BaseException,
        protocol.EXIT_STOPPED_BY_WATCH, protocol.ALONE_MARK,
    )  # fmt: skip
    plain_copy = sealed.seal(sealed.plain, type, issubclass, str, bytes, bytearray, int, slice(None))
    short_text = sealed.seal(sealed.short, plain_copy, type, int, repr)
    classifier = sealed.seal(
        sealed.classify, sandbox_ids, plain_copy, short_text, _path_classifier(plain_copy, short_text), os.getpid, id,
        type, len, (str,),
        (NETWORK, PROCESSES, SIGNALS, INTROSPECTION, NATIVE, TAMPERING),
    )  # fmt: skip
    # Made here, each child's counts are its own copy once it forks.
    emitter = sealed.seal(sealed.emit, array.array("q", [0] * len(KINDS)), KINDS, REPORTS_PER_KIND, reporter)
    checker = sealed.seal(sealed.check_bindings, watched, dictionaries, emitter, type, str)
    caller = sealed.seal(sealed.caller_of_frame, own_file, helpers, code_of, back_of, file_of, name_of, exact)
    sealed_codes = frozenset(id(function.__code__) for function in sealed.SEALED + sealed_paths.SEALED)

    def handler(native: tuple[frozenset[str], tuple[str, ...]]) -> Callable[..., None]:
        on_code = sealed.seal(
            sealed.on_code, sys._getframe, file_of, exact, type, len, (code_type, str, bytes),
            (FRAME_ATTRIBUTES, SUSPENDED_FRAMES, COMPILING, BYTECODE, native[0]), (emitter, reporter, caller, plain_copy),
        )  # fmt: skip
        return sealed.seal(
            sealed.on_event, own_file, code_of, file_of, exact, type, id, len, (frame_type, function_type),
            (function_code, sealed_codes, TRACING, REFUSALS, native, CHECKED_AT),
            (checker, classifier, on_code, emitter, reporter, plain_copy),
        )  # fmt: skip

    return handler((REACHES_THE_REPORTER, NATIVE_MODULES)), handler((frozenset(), ())), reporter


def _path_classifier(plain_copy: Callable[..., Any], short_text: Callable[..., str]) -> Callable[..., Any]:
    """The sealed classifier of events on paths (sealed_paths.classify_path), with the sealed functions it calls."""
    paths = sealed_paths
    failures = (OSError, ValueError)  # a path the kernel would refuse (a NUL in it) leads nowhere
    resolve = sealed.seal(paths.resolved, os.getcwd, os.readlink, failures, len, REMOVED_FOLDER)
    another_process = sealed.seal(paths.another_process, len)
    path_text = sealed.seal(
        paths.path_text, plain_copy, type, issubclass, type.__dict__["__name__"].__get__, (str, bytes, int),
        BUFFERS, slice(0, 4097), Exception,
    )  # fmt: skip
    in_scratch, odd_path = sealed.seal(paths.in_scratch), sealed.seal(paths.odd_path)
    entry_of = sealed.seal(paths.entry_of, resolve)
    judge_open = sealed.seal(paths.judge_open, resolve, another_process, in_scratch)
    classify_open = sealed.seal(
        paths.classify_open, path_text, plain_copy, judge_open, odd_path, type, len, (str, int),
        (WRITE_FLAGS, WRITE_MODES),
    )  # fmt: skip
    uri_path = sealed.seal(paths.uri_path, int, bytes, frozenset("0123456789abcdefABCDEF"), len)
    classify_database = sealed.seal(paths.classify_database, path_text, judge_open, odd_path, uri_path)
    descriptor_outside = sealed.seal(paths.descriptor_outside, os.fstat, (OSError, OverflowError))
    moved_link = sealed.seal(
        paths.moved_link, path_text, plain_copy, resolve, entry_of, in_scratch, os.readlink, type, len, int, failures
    )
    classify_change = sealed.seal(
        paths.classify_change,
        (path_text, plain_copy, short_text, resolve, entry_of, in_scratch, odd_path, descriptor_outside, moved_link),
        type, len, int, (tuple(FILE_CHANGES.items()), LINKS_FOLLOWED),
    )  # fmt: skip
    return sealed.seal(
        paths.classify_path, path_text, resolve, entry_of, another_process, in_scratch, odd_path, len,
        (classify_open, classify_database, classify_change),
    )  # fmt: skip


def _is_native(name: object) -> bool:
    return isinstance(name, str) and name.split(".", 1)[0] in NATIVE_MODULES


def _native_handles() -> tuple[tuple[dict[str, Any], str], ...]:
    """Every name of a module outside ctypes bound to ctypes or to something it made (the confinement's C
    library, numpy's `ctypes`): with one of them, generated code would call native code no event reports."""
    found = []
    for name, module in list(sys.modules.items()):
        if _is_native(name) or not isinstance(module, types.ModuleType):
            continue
        for key, value in list(vars(module).items()):
            if isinstance(value, types.ModuleType):
                origin = value.__name__
            else:  # a class's module, or the module of an instance's class
                origin = getattr(value if isinstance(value, type) else type(value), "__module__", "")
            if _is_native(origin):
                found.append((vars(module), key))
    return tuple(found)


def drop_native_handles(shared: _Shared) -> None:
    """Takes ctypes out of the child's reach once its confinement no longer needs it: out of sys.modules (a
    new import of it is refused by the hook) and out of every module that held it (both found in the fork
    server, so that a child pays only for the removal)."""
    for namespace, key in shared.native_handles:
        namespace[key] = None
    for name in shared.native_modules:
        sys.modules.pop(name, None)


def trusted_folders(folders: tuple[str, ...], scratch: str) -> tuple[str, ...]:
    """Where code that is not the candidate's lives: the interpreter's path (never the scratch folder)."""
    return (*(folder for folder in folders if not (scratch + "/").startswith(folder)), "<frozen ")


def own_files(scratch: str) -> tuple[int, int]:
    """(scratch's device, the uid that marks a file there as the child's own, or -1): with no /proc to name a
    descriptor's file, these tell the child's files. A uid marks them only where the child has one of its own (the
    host, which made scratch's parent folder, has another); elsewhere every change through a descriptor is reported."""
    try:
        folder, parent = os.stat(scratch), os.stat(os.path.dirname(scratch))
    except OSError:
        return -1, -1
    own = os.getuid()
    return folder.st_dev, own if folder.st_uid == own and parent.st_uid != own else -1


def install(sock: Any, scratch: str, stop_when_reachable: bool = True) -> None:
    """Reports each attempt as an `event` message on the channel `sock`, each in a packet of its own.

    With `stop_when_reachable`, ctypes is taken out of reach, a new import of it refused, and an attempt that
    could reach into the reporter (REACHES_THE_REPORTER) stops the child; without, such attempts are only
    reported (for tests that search the child's memory or probe the kernel's layers with ctypes).
    """
    prepare()
    shared = _shared.pop()
    if stop_when_reachable:
        drop_native_handles(shared)
    # A descriptor of the channel of the hook's own: generated code that rebinds the runner's socket to a
    # pipe, or closes it, does not reach this one, and one that reaches it too is caught by the check.
    descriptor = os.dup(sock.fileno())
    status = os.fstat(descriptor)
    trusted = trusted_folders(shared.path_folders, scratch)
    context = (descriptor, (status.st_dev, status.st_ino), scratch, trusted, own_files(scratch))
    handler = shared.stopping if stop_when_reachable else shared.reporting
    hook = sealed.seal(
        sealed.hook, handler, shared.report, context, BaseException, Exception, REFUSALS, type, issubclass
    )
    sys.addaudithook(hook)
