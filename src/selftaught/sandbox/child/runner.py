"""Entry point of a sandboxed child: limits itself, runs one job of generated code, reports to the host.

Started by the host as `python -S runner.py FD`, or imported by the fork server, which calls
`serve_job` in each forked child. It imports only the standard library and the sibling modules of
this folder, which it puts on sys.path itself (so generated code can `from helpers import
extract_code`). Generated code never sees a host object: its language model and utility are
proxies over the channel on file descriptor FD.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import importlib.util
import os
import random
import resource
import signal
import socket
import sys
import traceback
from typing import Any

# The sibling modules are importable only once their folder is on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import isolation
import protocol
import proxies
import seccomp
import watch

RLIMITS = {
    "cpu_seconds": resource.RLIMIT_CPU,
    "address_space_bytes": resource.RLIMIT_AS,
    "open_files": resource.RLIMIT_NOFILE,
    "file_size_bytes": resource.RLIMIT_FSIZE,
    "core_bytes": resource.RLIMIT_CORE,
}


#: The job's last messages up to this size fit a local socket's buffer (208 KiB by default on Linux).
BUFFERED_BYTES = 64 * 1024


class InstanceTimeout(BaseException):
    """Raised by the alarm inside an algorithm call that outlived its time limit.

    A BaseException so that a generated `except Exception:` cannot swallow it.
    """


def apply_limits(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        # The CPU limit's hard value is a second later, so the soft one ends the child with SIGXCPU, a clear cause.
        hard = value + 1 if name == "cpu_seconds" else value
        resource.setrlimit(RLIMITS[name], (value, hard))


def describe_failure(error: BaseException) -> str:
    if isinstance(error, SyntaxError):
        return f"SyntaxError: {error.msg} (line {error.lineno})"
    frames = traceback.extract_tb(error.__traceback__)
    generated = [frame for frame in frames if frame.filename == "<generated>"]
    where = f" (line {generated[-1].lineno})" if generated else ""
    return f"{type(error).__name__}: {str(error)[:500]}{where}"


def load_entry_point(source: str, entry_point: str) -> Any:
    namespace: dict[str, Any] = {"__name__": "generated", "__builtins__": builtins}
    exec(compile(source, "<generated>", "exec"), namespace)
    function = namespace.get(entry_point)
    if not callable(function):
        raise NameError(f"the code defines no function named {entry_point!r}")
    return function


def decode_argument(value: Any, tail: memoryview) -> Any:
    """An instance argument from its `instance` message; its arrays' bytes are in the message's tail."""
    if isinstance(value, dict) and protocol.NDARRAY_TAG in value:
        import numpy  # from the allowed packages; only needed when the task passes arrays

        spec = value[protocol.NDARRAY_TAG]
        count = 1
        for size in spec["shape"]:
            count *= size
        wire = numpy.frombuffer(tail, dtype=spec["wire"], count=count, offset=spec["offset"])
        # A copy in the task's own dtype: writable, and not shared with the other arguments.
        return wire.astype(spec["dtype"]).reshape(spec["shape"])
    if isinstance(value, list):
        return [decode_argument(item, tail) for item in value]
    if isinstance(value, dict):
        return {key: decode_argument(item, tail) for key, item in value.items()}
    return value


def seed_generators(seed: int) -> None:
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2**32)


def raise_timeout(signum: int, frame: Any) -> None:
    raise InstanceTimeout()


def run_algorithm(channel: proxies.Channel, job: dict[str, Any]) -> None:
    """Loads the solution, says so, then runs it on each instance the host sends, one output message each.

    The instances arrive only once the solution is loaded, each is read from the channel only when
    its turn comes, and each output goes out as soon as its instance ends: the host times every
    instance by when its output was sent.
    """
    time_limit = float(job["time_limit_seconds"])
    signal.signal(signal.SIGALRM, raise_timeout)
    # Loading the solution (its module-level code) gets the same limit as one instance.
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    try:
        function = load_entry_point(job["source"], job["entry_point"])
    except InstanceTimeout:
        raise TimeoutError(f"loading the solution took longer than {time_limit:g} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    channel.send({"kind": protocol.READY})
    last = int(job["instance_count"]) - 1
    for index in range(int(job["first_instance"]), last + 1):
        message, tail = channel.receive()
        if message.get("kind") != protocol.INSTANCE or message.get("index") != index:
            raise protocol.ProtocolError(f"expected instance {index}")
        result: dict[str, Any] = {"kind": protocol.OUTPUT, "index": index, "error": None, "timed_out": False}
        try:
            view = memoryview(tail)
            arguments = [decode_argument(argument, view) for argument in message["arguments"]]
            del message, tail, view
            seed_generators(int(job["seed"]) + index)
            signal.setitimer(signal.ITIMER_REAL, time_limit)
            output = function(*arguments)
            signal.setitimer(signal.ITIMER_REAL, 0)
            result["output"] = protocol.encode_value(output)
        except InstanceTimeout:
            result["timed_out"] = True
        except BaseException as error:
            signal.setitimer(signal.ITIMER_REAL, 0)
            result["error"] = describe_failure(error)
        send_output(channel, result, last=index == last)


def send_output(channel: proxies.Channel, result: dict[str, Any], last: bool) -> None:
    """Sends one instance's output; one too large to send goes as an error instead."""
    try:
        frames = protocol.frame(result, limit=protocol.MAX_CHILD_MESSAGE_BYTES)
    except protocol.ProtocolError as error:
        result.pop("output", None)
        frames = protocol.frame({**result, "error": f"the output is too large: {error}"})
    if last:
        finish_with(channel, frames)
    else:
        channel.send_frames(frames)


def run_improver(channel: proxies.Channel, job: dict[str, Any]) -> None:
    function = load_entry_point(job["source"], job["entry_point"])
    utility = proxies.Utility(channel, job["utility"])
    language_model = proxies.LanguageModel(channel, job["language_model"])
    seed_generators(int(job["seed"]))
    value = function(job["initial_solution"], utility, language_model)
    finish(channel, {"kind": protocol.RESULT, "value": protocol.encode_value(value)})


JOBS = {"algorithm": run_algorithm, "improver": run_improver}

#: Imported before privileges are dropped: afterwards the interpreter's own folder may be unreadable.
PRELOADED_MODULES = (
    "array", "ast", "bisect", "cmath", "collections", "concurrent.futures", "contextlib", "copy", "dataclasses",
    "decimal", "enum", "fractions", "functools", "hashlib", "heapq", "itertools", "json", "math", "numbers",
    "operator", "queue", "random", "re", "statistics", "string", "struct", "textwrap", "threading", "typing",
    "zlib", "concurrent.futures.thread", "encodings.idna", "helpers", "collections.abc", "copyreg", "pprint",
)  # fmt: skip
NUMPY_MODULES = ("numpy", "numpy.random", "numpy.linalg", "numpy.fft", "numpy.polynomial")


def preload(package_paths: list[str]) -> None:
    """Imports what generated code commonly needs, with the allowed packages (numpy) on the path."""
    sys.path.extend(path for path in package_paths if path not in sys.path)
    for name in PRELOADED_MODULES:
        importlib.import_module(name)
    if importlib.util.find_spec("numpy") is not None:
        for name in NUMPY_MODULES:
            importlib.import_module(name)


def serve_job(sock: socket.socket, preloaded: bool = False) -> None:
    """Receives one job, confines this process, runs the job, and exits without returning."""
    channel = proxies.Channel(sock)
    try:
        job, _ = channel.receive()
        if not preloaded:
            preload(job["package_paths"])
        apply_limits(job["limits"])
        missing = confine(job["isolation"], job["scratch"])
        if missing:
            channel.notify("sandbox_layer_missing", missing)
            if job["isolation"].get("strict"):
                raise PermissionError(f"strict sandbox: {'; '.join(missing.values())}")
        watch.install(channel.sock, channel.lock, job["scratch"])
        JOBS[job["job"]](channel, job)
    except BaseException as error:
        with contextlib.suppress(OSError, protocol.ProtocolError):
            finish(channel, {"kind": protocol.FAILURE, "error": describe_failure(error)})
    finally:
        yield_to_host()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        # Skip interpreter teardown: threads or atexit hooks left by generated code must not delay the exit.
        os._exit(0)


def finish(channel: proxies.Channel, message: dict[str, Any]) -> None:
    """Sends the job's last message."""
    finish_with(channel, protocol.frame(message, limit=protocol.MAX_CHILD_MESSAGE_BYTES))


def finish_with(channel: proxies.Channel, frames: bytes) -> None:
    """Sends the job's last frames; after them the host ends this process, and the host must not wait behind it.

    A write that fits the socket's buffer needs no more CPU time from the child once started, so
    the child drops to idle priority first and the host, woken by the write, runs on this core at
    once; a larger one may wait for the host to read it, so the child keeps its priority.
    """
    if len(frames) <= BUFFERED_BYTES:
        yield_to_host()
    channel.send_frames(frames)


def yield_to_host() -> None:
    """Runs the rest of this child at idle priority: only otherwise idle CPU time goes to its exit."""
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def confine(layers: dict[str, Any], scratch: str) -> dict[str, str]:
    """Applies the requested isolation layers in order; returns the missing ones with the reason."""
    # The death signal and the dumpable flag are reset whenever a process's credentials change: both come
    # after dropping privileges and entering new namespaces, or a child would outlive its host.
    steps = [
        ("max_processes", lambda: isolation.limit_processes(int(layers["max_processes"]))),
        ("drop_privileges", isolation.drop_privileges),
        ("network_namespace", isolation.isolate_network),
        ("die_with_parent", isolation.die_with_parent),
        ("undumpable", isolation.make_undumpable),
        ("landlock", lambda: isolation.restrict_filesystem(layers["landlock"]["read_only"], [scratch])),
        ("seccomp", seccomp.install),
    ]
    missing: dict[str, str] = {}
    for name, apply in steps:
        if layers.get(name):
            try:
                apply()
            except (isolation.LayerUnavailable, OSError) as error:
                missing[name] = f"{name}: {error}"
    return missing


def main() -> None:
    serve_job(socket.socket(fileno=int(sys.argv[1])))


if __name__ == "__main__":
    main()
