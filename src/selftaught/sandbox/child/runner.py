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
import json
import os
import random
import resource
import signal
import socket
import sys
import traceback
from collections.abc import Iterator
from time import perf_counter
from typing import Any

# The sibling modules are importable only once their folder is on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import isolation
import protocol
import proxies
import seccomp
import watch

#: Bound at import: generated code that rebinds sys.audit does not stop the runner's own checks.
audit = sys.audit

RLIMITS = {
    "cpu_seconds": resource.RLIMIT_CPU,
    "address_space_bytes": resource.RLIMIT_AS,
    "open_files": resource.RLIMIT_NOFILE,
    "file_size_bytes": resource.RLIMIT_FSIZE,
    "core_bytes": resource.RLIMIT_CORE,
}


#: How long a child looks for an answer the host sends at once before it sleeps until it comes.
ANSWER_POLL_SECONDS = 0.002
#: The job's last messages up to this size fit a local socket's buffer (208 KiB by default on Linux).
BUFFERED_BYTES = 64 * 1024


class InstanceTimeout(BaseException):
    """Raised by the alarm inside an algorithm call that outlived its time limit.

    A BaseException so that a generated `except Exception:` cannot swallow it.
    """


def leave_at_cpu_limit(signum: int, frame: Any) -> None:
    os._exit(protocol.EXIT_CPU_LIMIT)


def apply_limits(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        # The CPU limit's hard value is a second later, so the soft one ends the child with SIGXCPU, a clear cause.
        hard = value + 1 if name == "cpu_seconds" else value
        resource.setrlimit(RLIMITS[name], (value, hard))
    # Alone in its pid namespace, a child is its first process, which ignores signals it has no handler
    # for: without this one, SIGXCPU would be ignored until the hard limit's SIGKILL.
    signal.signal(signal.SIGXCPU, leave_at_cpu_limit)


def describe_failure(error: BaseException) -> str:
    if isinstance(error, SyntaxError):
        return f"SyntaxError: {error.msg} (line {error.lineno})"
    frames = traceback.extract_tb(error.__traceback__)
    generated = [frame for frame in frames if frame.filename == "<generated>"]
    where = f" (line {generated[-1].lineno})" if generated else ""
    return f"{type(error).__name__}: {str(error)[:500]}{where}"


def load_entry_point(source: str, entry_point: str) -> Any:
    namespace: dict[str, Any] = {"__name__": "generated", "__builtins__": builtins}
    # dont_inherit: the runner's own `from __future__ import annotations` must not change how generated
    # code evaluates its annotations (a module-level @dataclass would fail to find its module).
    exec(compile(source, "<generated>", "exec", dont_inherit=True), namespace)
    function = namespace.get(entry_point)
    if not callable(function):
        raise NameError(f"the code defines no function named {entry_point!r}")
    return function


def decode_argument(value: Any, tail: memoryview) -> Any:
    """An instance argument from the `instances` message; its arrays' bytes are in the instance's slice of the tail."""
    if type(value) is dict and protocol.NDARRAY_TAG in value:
        import numpy  # from the allowed packages; only needed when the task passes arrays

        spec = value[protocol.NDARRAY_TAG]
        wire = numpy.frombuffer(tail, dtype=spec["wire"], count=spec["count"], offset=spec["offset"])
        # A copy in the task's own dtype: writable, and not shared with the other arguments.
        return wire.astype(spec["dtype"]).reshape(spec["shape"])
    if type(value) is list:
        return [decode_argument(item, tail) for item in value]
    if type(value) is dict:
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
    """Loads the solution, says so, then runs it on each instance the host sends and reports every output.

    The host sends the instances only once the solution is loaded.
    Outputs go out in batches, one at least every FLUSH_SECONDS and the last at once: the host times
    each batch by when it was sent, and the times the child claims for its instances must add up to
    that.
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
    instances = decoded_instances(*receive_soon(channel))
    batch: list[dict[str, Any]] = []
    last_flush = perf_counter()
    for index, decoded, problem, remaining in instances:
        result: dict[str, Any] = {"index": index, "error": problem, "timed_out": False, "seconds": 0.0}
        if problem is None:
            run_instance(function, decoded, int(job["seed"]) + index, time_limit, result)
        del decoded
        batch.append(result)
        if perf_counter() - last_flush >= protocol.FLUSH_SECONDS and remaining:
            send_outputs(channel, batch)
            batch, last_flush = [], perf_counter()
    send_outputs(channel, batch, last=True)


def run_instance(function: Any, arguments: list[Any], seed: int, time_limit: float, result: dict[str, Any]) -> None:
    """Calls the solution on one instance under its alarm; fills in its output, error or time-out and its time."""
    try:
        seed_generators(seed)
        started = perf_counter()
        signal.setitimer(signal.ITIMER_REAL, time_limit)
        try:
            output = function(*arguments)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            result["seconds"] = perf_counter() - started
        result["output"] = protocol.encode_value(output)
    except InstanceTimeout:
        result["timed_out"] = True
    except BaseException as error:
        result["error"] = describe_failure(error)


def decoded_instances(message: dict[str, Any], tail: bytes) -> Iterator[tuple[int, list[Any], str | None, bool]]:
    """Each instance of the `instances` message in turn: its index, its decoded arguments (or why they could not
    be decoded), and whether more follow.

    The message and its tail live only in this generator's frame, so the frames generated code runs
    in hold the instance it is given and no other: reaching this one takes reading `gi_frame`, which
    the audit hook reports.
    """
    if message.get("kind") != protocol.INSTANCES:
        raise protocol.ProtocolError("expected the instances")
    first, arguments = int(message["first"]), message["arguments"]
    bounds = [*message["tails"], len(tail)]
    view = memoryview(tail)
    for offset, encoded in enumerate(arguments):
        decoded: list[Any] = []
        problem = None
        try:
            decoded = [decode_argument(argument, view[bounds[offset] : bounds[offset + 1]]) for argument in encoded]
        except Exception as error:
            problem = describe_failure(error)
        yield first + offset, decoded, problem, offset < len(arguments) - 1


def receive_soon(channel: proxies.Channel) -> tuple[dict[str, Any], bytes]:
    """The host's answer to a message it answers at once: polled for a moment before sleeping on it.

    A process that sleeps this briefly pays more to wake up than to look a few hundred times.
    """
    deadline = perf_counter() + ANSWER_POLL_SECONDS
    while perf_counter() < deadline:
        try:
            return channel.receive(wait=False)
        except BlockingIOError:
            continue
    return channel.receive()


def send_outputs(channel: proxies.Channel, batch: list[dict[str, Any]], last: bool = False) -> None:
    """Sends a batch of outputs, the last one with the end of the job; an output too large to send goes as an error."""
    audit("selftaught.outputs", len(batch))  # the audit hook checks, among others, that nothing here was rebound
    frames = b""
    for result in batch:
        try:
            protocol.frame(result, limit=protocol.MAX_CHILD_MESSAGE_BYTES)
        except protocol.ProtocolError as error:  # alone too large: its error is sent instead
            result.pop("output", None)
            result["error"] = f"the output is too large: {error}"
    try:
        frames = protocol.frame({"kind": protocol.OUTPUTS, "results": batch}, limit=protocol.MAX_CHILD_MESSAGE_BYTES)
    except protocol.ProtocolError:  # too large together: one message each
        frames = b"".join(
            protocol.frame({"kind": protocol.OUTPUTS, "results": [result]}, limit=protocol.MAX_CHILD_MESSAGE_BYTES)
            for result in batch
        )
    if last:
        frames += protocol.frame({"kind": protocol.RESULT, "value": None})
    channel.send_frames(frames)
    if last:  # only after sending: the batch's time is when it was sent
        yield_to_host()


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
    "array", "ast", "bisect", "cmath", "fcntl", "collections", "concurrent.futures", "contextlib", "copy", "dataclasses",
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


def warm_up() -> None:
    """Runs an instance's way through this module once, so that children forked later find it ready.

    Whatever the first run initializes (the JSON decoder's caches, numpy's conversions) then lives
    in the fork server's memory, shared by every child, instead of being built again in each.
    """
    tail = bytes(range(40))
    message = json.loads(
        protocol.frame(
            {
                "kind": protocol.INSTANCES,
                "first": 0,
                "arguments": [
                    {protocol.NDARRAY_TAG: {"dtype": "<i8", "shape": [4, 5], "wire": "|u1", "offset": 0, "count": 20}},
                    {protocol.NDARRAY_TAG: {"dtype": "<f8", "shape": [20], "wire": "|u1", "offset": 20, "count": 20}},
                    [1, 2.5, "x"],
                ],
            }
        )[protocol.HEADER.size :]
    )
    if "numpy" in sys.modules:
        arguments = [decode_argument(argument, memoryview(tail)) for argument in message["arguments"]]
        results = [{"index": 0, "output": protocol.encode_value(arguments), "error": None, "seconds": 0.0}]
        protocol.frame({"kind": protocol.OUTPUTS, "results": results}, limit=protocol.MAX_CHILD_MESSAGE_BYTES)
        seed_generators(0)


def serve_job(sock: socket.socket, preloaded: bool = False) -> None:
    """Receives its setup, confines this process, then waits for a job, runs it, and exits without returning.

    The setup holds nothing of a job, so the host may start a child well before it has a job for
    it: the job's code arrives only once every layer holds.
    """
    channel = proxies.Channel(sock)
    try:
        setup = receive_kind(channel, protocol.SETUP)
        if not preloaded:
            preload(setup["package_paths"])
        apply_limits(setup["limits"])
        missing = confine(setup["isolation"], setup["scratch"])
        if missing:
            channel.notify("sandbox_layer_missing", missing)
            if setup["isolation"].get("strict"):
                raise PermissionError(f"strict sandbox: {'; '.join(missing.values())}")
        use_scratch_for_temporary_files(setup["scratch"])
        watch.install(channel.sock, setup["scratch"], setup["isolation"].get("stop_when_reporter_reachable", True))
        job = receive_kind(channel, protocol.JOB)
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


def receive_kind(channel: proxies.Channel, kind: str) -> dict[str, Any]:
    message, _ = channel.receive()
    if message.get("kind") != kind:
        raise protocol.ProtocolError(f"expected the {kind}")
    return message


def use_scratch_for_temporary_files(scratch: str) -> None:
    """`tempfile` and anything else that looks at TMPDIR write in scratch, the only folder a child may write."""
    os.environ["TMPDIR"] = scratch
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:
        setattr(tempfile, "tempdir", scratch)  # noqa: B010 (the module is only looked up, not imported)


def finish(channel: proxies.Channel, message: dict[str, Any]) -> None:
    """Sends the job's last message."""
    finish_with(channel, protocol.frame(message, limit=protocol.MAX_CHILD_MESSAGE_BYTES))


def finish_with(channel: proxies.Channel, frames: bytes) -> None:
    """Sends the job's last frames; after them the host ends this process, and the host must not wait behind it.

    A write that fits the socket's buffer needs no more CPU time from the child once started, so
    the child drops to idle priority first and the host, woken by the write, runs on this core at
    once; a larger one may wait for the host to read it, so the child keeps its priority.
    """
    audit("selftaught.finish", len(frames))  # the audit hook checks, among others, that nothing here was rebound
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
        ("pid_namespace", isolation.check_own_pid_namespace),
        ("max_processes", lambda: isolation.limit_processes(int(layers["max_processes"]))),
        ("drop_privileges", lambda: isolation.drop_privileges(int(layers["uid"]))),
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
