"""The sealed functions of the sandbox's reporter (its audit hook, wired by watch.install).

Each takes what it uses as its last parameter, `bound`, a tuple that `seal` fills once; none of them
looks up a global or builtin name when it runs (a test reads their bytecode for it), and none has a
closure (those that judge paths, in sealed_paths.py, are made so too). So walking `gc`, or a frame of the hook taken by a signal handler, hands generated code
nothing it could rebind to change them: the defaults tuple is replaced only by an audited
assignment, on which the hook stops the child, and holds only things that cannot change (built-in
functions and descriptors, numbers, strings, frozensets, tuples, other sealed functions), but for
the count of reports per kind, an array of machine integers.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any


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


def classify(
    event: str, args: tuple[Any, ...], context: tuple[Any, ...], bound: tuple[Any, ...] = ()
) -> tuple[str, str] | None:
    """(kind, detail) for an event that attempts to leave the sandbox or to reach into it, or None.

    `args` come from generated code: only their exact built-in copies (`plain`) are looked at.
    """
    sandbox_ids, plain, short, classify_path, own_pid, identity, kind_of, count, types, constants = bound
    text = types[0]
    network, processes, signals, introspection, native, tampering = constants
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
    return classify_path(event, args, context)


def report(context: tuple[Any, ...], kind: str, detail: str, last: bool = False, bound: tuple[Any, ...] = ()) -> None:
    """Writes the report at once, in a packet of its own (which the host never takes for part of another
    message): no lock to wait for, so generated code that holds the channel's lock delays nothing."""
    write, status, leave, escape, to_bytes, count, failure, stopped, alone = bound
    descriptor, identity = context[0], context[1]
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


def emit(context: tuple[Any, ...], kind: str, detail: str, bound: tuple[Any, ...] = ()) -> None:
    """Reports an attempt; one past the limit of its kind stops the child, so no flood of decoys hides another."""
    sent, kinds, limit, report = bound
    index = kinds.index(kind)
    sent[index] += 1  # an array of machine integers: whatever generated code does to it, no code of its runs here
    if sent[index] <= limit:
        report(context, kind, detail)
    else:
        report(context, kind, "more attempts of this kind than the reporter reports; the child was stopped", True)


def check_bindings(context: tuple[Any, ...], bound: tuple[Any, ...] = ()) -> None:
    """Reports the names the runtime calls that were rebound behind the modules' guard, at every check (a mark of
    what was reported already would be state a frame could reach and set)."""
    watched, dictionaries, emit, kind_of, text = bound
    for dictionary in dictionaries:
        for name in dictionary:  # a key of a str subclass would run its __eq__ in the lookups below
            if kind_of(name) is not text:
                emit(context, "tampering", "puts a name that is not a plain string in the sandbox's modules")
                return
    for get, key, original in watched:
        if get(key) is not original:
            emit(context, "tampering", "rebinds " + key + " in the sandbox's modules")


def caller_of_frame(
    frame: Any, trusted: tuple[str, ...], anywhere: bool = False, bound: tuple[Any, ...] = ()
) -> tuple[bool, str]:
    """Whether the frame that raised an event, or the code a chain of FRAME_HELPERS in it hands the frame to,
    is the candidate's, and through which helper; `anywhere`: whether any code of the candidate's is on the stack."""
    own_file, helpers, code_of, back_of, file_of, name_of, exact = bound
    while frame is not None and exact(file_of(code_of(frame))) == own_file:
        frame = back_of(frame)
    helper = ""
    while frame is not None:
        file = exact(file_of(code_of(frame)))
        if not file.startswith(trusted):
            return True, helper
        if anywhere:
            frame = back_of(frame)
            continue
        function = exact(name_of(code_of(frame)))
        for helper_file, helper_function, name in helpers:
            if helper_file == file and helper_function == function:
                helper = name
                break
        else:
            return False, ""
        frame = back_of(frame)
    return False, ""


def on_code(event: str, args: tuple[Any, ...], context: tuple[Any, ...], bound: tuple[Any, ...] = ()) -> bool:
    """Handles an event about frames or code (taking a frame, making code from bytes or under a library's
    name); whether it was one."""
    take_frame, file_of, exact, kind_of, count, runtime_types, checks, sealed = bound
    code_type, text, data = runtime_types
    attributes, suspended, compiling, bytecode, reaching = checks
    emit, report, caller_of_frame, plain = sealed
    trusted = context[3]
    if event == "object.__getattr__" or event == "sys._getframe":
        attribute = plain(args[1]) if event == "object.__getattr__" and count(args) > 1 else None
        if event == "object.__getattr__" and not (kind_of(attribute) is text and attribute in attributes):
            return True
        generated, helper = caller_of_frame(take_frame(0), trusted, attribute in suspended)
        if generated:
            emit(context, "introspection", helper or ("reads " + attribute if attribute else "sys._getframe"))
        return True
    if event in bytecode and caller_of_frame(take_frame(0), trusted)[0]:
        # Code objects made from bytes, not compiled: unchecked bytecode reads and writes any memory.
        if reaching:
            report(
                context,
                "native_code",
                event + ": bytecode of its own can rewrite the reporter; the child was stopped",
                True,
            )
        emit(context, "native_code", event)
    if event in compiling or event == "function.__new__":
        code = args[0] if event == "function.__new__" and count(args) else None
        named: Any = exact(file_of(code)) if kind_of(code) is code_type else plain(args[1]) if count(args) > 1 else None
        if kind_of(named) is data:
            named = named.decode("utf-8", "replace")
        if kind_of(named) is text and named.startswith(trusted) and caller_of_frame(take_frame(0), trusted)[0]:
            emit(context, "tampering", event + " under the name of " + named[:200])
        return True
    return False


def on_event(event: str, args: tuple[Any, ...], context: tuple[Any, ...], bound: tuple[Any, ...] = ()) -> None:
    """Reports, refuses or stops what an audit event says the child attempts."""
    own_file, code_of, file_of, exact, kind_of, identity, count, runtime_types, checks, sealed = bound
    frame_type, function_type = runtime_types
    function_code, sealed_codes, tracing, refusals, native, checked_at = checks
    refusal, refused_import = refusals
    reaching, native_modules = native
    check_bindings, classify, on_code, emit, report, plain = sealed
    if (
        event == "sys._getframe"
        and count(args)
        and kind_of(args[0]) is frame_type
        and exact(file_of(code_of(args[0]))) == own_file
    ):
        return  # the hook's own look at the stack
    if event in tracing:
        report(context, "introspection", event + ": a function called in every frame; the child was stopped", True)
    if event == "sys.addaudithook":
        emit(context, "tampering", "adds an audit hook of its own (refused)")
        raise refusal("the sandbox allows no other audit hook")
    if event == "cpython.PyInterpreterState_New":
        emit(context, "tampering", "starts a sub-interpreter, which no audit hook would watch (refused)")
        raise refusal("the sandbox allows no sub-interpreter")
    if event in checked_at:
        check_bindings(context)
    if event in reaching:
        kind = "introspection" if event.startswith("gc.") else "native_code"
        report(context, kind, event + ": it could reach into the sandbox's reporter; the child was stopped", True)
    if event == "import" and count(args) and plain(args[0]) in native_modules:
        emit(context, "native_code", "imports " + plain(args[0]) + " (refused)")
        raise refused_import("the sandbox allows no native code (ctypes)")
    if event.startswith("ctypes."):
        emit(context, "native_code", event)
        return
    if (
        event == "object.__setattr__"
        and count(args) > 1
        and kind_of(args[0]) is function_type
        and identity(function_code(args[0])) in sealed_codes
    ):
        report(context, "tampering", "changes a function of the sandbox's reporter; the child was stopped", True)
    if on_code(event, args, context):
        return
    found = classify(event, args, context)
    if found is not None and found[0] == "native_code" and reaching and found[1].startswith("reads bytecode"):
        report(
            context,
            "native_code",
            found[1] + ": bytecode of its own can rewrite the reporter; the child was stopped",
            True,
        )
    if found is not None:
        emit(context, found[0], found[1])


def hook(event: str, args: tuple[Any, ...], bound: tuple[Any, ...] = ()) -> None:
    """The audit hook: a reporting failure never changes what generated code sees, and never goes unreported."""
    on_event, report, context, failure, ordinary, refusals, kind_of, subclass = bound
    try:
        on_event(event, args, context)
    except failure as error:
        # By identity: `in` would compare with ==, which a metaclass of the candidate's may define.
        if kind_of(error) is refusals[0] or kind_of(error) is refusals[1] or not subclass(kind_of(error), ordinary):
            raise  # the refusal of another hook, or an interruption (an instance's time is up) goes on
        report(context, "tampering", event + ": the reporter could not read what it was given")


class Refused(RuntimeError):
    """Raised by the hook on `sys.addaudithook` (Python then adds no hook, and the caller sees nothing) or a
    new interpreter."""


class RefusedImport(ImportError):
    """Raised by the hook on an import of native code: the importer sees an ImportError, as where it is missing."""


def seal(function: Callable[..., Any], *bound: Any) -> Callable[..., Any]:
    """A copy of a function of this module or sealed_paths that uses only `bound`, given as its last parameter's
    default.

    Its globals hold nothing (not even the builtins), so a name it looked up would fail at once
    instead of reading something generated code can rebind.
    """
    defaults = (*(function.__defaults__ or ())[:-1], bound)
    return types.FunctionType(function.__code__, {"__builtins__": {}}, function.__name__, defaults)


SEALED = (
    plain,
    short,
    classify,
    report,
    emit,
    check_bindings,
    caller_of_frame,
    on_code,
    on_event,
    hook,
)
