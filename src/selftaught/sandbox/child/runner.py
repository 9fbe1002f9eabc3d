"""Entry point of a sandboxed child: limits itself, runs one job of generated code, reports to the host.

Started by the host as `python -S runner.py FD`, or imported by the fork server, which calls
`serve_job` in each forked child. It imports only the standard library and the sibling modules of
this folder, which it puts on sys.path itself (so generated code can `from helpers import
extract_code`). Generated code never sees a host object: its language model and utility are
proxies over the channel on file descriptor FD.
"""

from __future__ import annotations

import base64
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
import time
import traceback
from typing import Any

# The sibling modules are importable only once their folder is on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import isolation
import protocol
import proxies
import watch

RLIMITS = {
    "cpu_seconds": resource.RLIMIT_CPU,
    "address_space_bytes": resource.RLIMIT_AS,
    "open_files": resource.RLIMIT_NOFILE,
    "file_size_bytes": resource.RLIMIT_FSIZE,
    "core_bytes": resource.RLIMIT_CORE,
}


FLUSH_SECONDS = 0.1
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


def decode_argument(value: Any) -> Any:
    if isinstance(value, dict) and protocol.NDARRAY_TAG in value:
        import numpy  # from the allowed packages; only needed when the task passes arrays

        spec = value[protocol.NDARRAY_TAG]
        raw = base64.b64decode(spec["base64"])
        return numpy.frombuffer(raw, dtype=spec["dtype"]).reshape(spec["shape"]).copy()
    if isinstance(value, list):
        return [decode_argument(item) for item in value]
    return value


#: Instances the fork server decoded once; each forked child gets its own copy-on-write view of them.
CACHED_INSTANCES: dict[str, list[list[Any]]] = {}


def decode_instances(instances: list[list[Any]]) -> list[list[Any]]:
    return [[decode_argument(argument) for argument in arguments] for arguments in instances]


def seed_generators(seed: int) -> None:
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2**32)


def raise_timeout(signum: int, frame: Any) -> None:
    raise InstanceTimeout()


def run_algorithm(channel: proxies.Channel, job: dict[str, Any]) -> None:
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
    batch: list[dict[str, Any]] = []
    last_flush = time.monotonic()
    key = job.get("instances_key")
    instances = CACHED_INSTANCES[key] if key in CACHED_INSTANCES else decode_instances(job["instances"])
    for index, decoded in enumerate(instances):
        seed_generators(int(job["seed"]) + index)
        result: dict[str, Any] = {"index": index, "error": None, "timed_out": False}
        started = time.perf_counter()
        try:
            signal.setitimer(signal.ITIMER_REAL, time_limit)
            output = function(*decoded)
            signal.setitimer(signal.ITIMER_REAL, 0)
            result["output"] = protocol.encode_value(output)
        except InstanceTimeout:
            result["timed_out"] = True
        except BaseException as error:
            signal.setitimer(signal.ITIMER_REAL, 0)
            result["error"] = describe_failure(error)
        result["elapsed_seconds"] = time.perf_counter() - started
        batch.append(result)
        # Results go out in batches, at least every FLUSH_SECONDS, so a killed child loses little.
        if time.monotonic() - last_flush > FLUSH_SECONDS:
            send_results(channel, batch)
            batch, last_flush = [], time.monotonic()
    try:
        finish(channel, {"kind": protocol.INSTANCES, "results": batch}, {"kind": protocol.RESULT, "value": None})
    except protocol.ProtocolError:  # too large together
        send_results(channel, batch)
        finish(channel, {"kind": protocol.RESULT, "value": None})


def send_results(channel: proxies.Channel, batch: list[dict[str, Any]]) -> None:
    try:
        channel.send({"kind": protocol.INSTANCES, "results": batch})
    except protocol.ProtocolError:  # too large together: one by one, dropping any output that is too large alone
        for result in batch:
            try:
                channel.send({"kind": protocol.INSTANCES, "results": [result]})
            except protocol.ProtocolError as error:
                result.pop("output", None)
                channel.send({"kind": protocol.INSTANCES, "results": [{**result, "error": str(error)}]})


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
        job = protocol.receive_message(sock)
        if not preloaded:
            preload(job["package_paths"])
        apply_limits(job["limits"])
        missing = confine(job["isolation"], job["scratch"])
        if missing:
            channel.notify("sandbox_layer_missing", missing)
            if job["isolation"].get("strict"):
                raise PermissionError(f"strict sandbox: {'; '.join(missing.values())}")
        if job["isolation"].get("watch", True):
            watch.install(
                lambda kind, detail: channel.notify("sandbox_violation", {"kind": kind, "detail": detail}),
                job["scratch"],
            )
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


def finish(channel: proxies.Channel, *messages: dict[str, Any]) -> None:
    """Sends the job's last messages in one write, so that the host wakes once for all of them.

    After them the child only exits, which frees its memory: the host must not wait behind that.
    A write that fits the socket's buffer needs no more CPU time from the child once started, so
    the child drops to idle priority first; a larger one may wait for the host to read it, so the
    child keeps its priority until it is done (and drops it on the way out, in serve_job).
    """
    frames = b"".join(protocol.frame(message) for message in messages)  # ProtocolError if one is too large
    if len(frames) <= BUFFERED_BYTES:
        yield_to_host()
    channel.send_frames(frames)


def yield_to_host() -> None:
    """Runs the rest of this child at idle priority: only otherwise idle CPU time goes to its exit.

    The host woken by the child's last message then runs on this core at once.
    """
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def confine(layers: dict[str, Any], scratch: str) -> dict[str, str]:
    """Applies the requested isolation layers in order; returns the missing ones with the reason."""
    steps = [
        ("die_with_parent", isolation.die_with_parent),
        ("undumpable", isolation.make_undumpable),
        ("max_processes", lambda: isolation.limit_processes(int(layers["max_processes"]))),
        ("drop_privileges", isolation.drop_privileges),
        ("network_namespace", isolation.isolate_network),
        ("landlock", lambda: isolation.restrict_filesystem(layers["landlock"]["read_only"], [scratch])),
        ("seccomp", isolation.install_seccomp),
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
