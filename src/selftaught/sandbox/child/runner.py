"""Entry point of a sandboxed child: limits itself, runs one job of generated code, reports to the host.

Started by the host as `python -I -S runner.py FD`. It imports only the standard library and the
sibling modules of this folder, which it puts on sys.path itself (so generated code can
`from helpers import extract_code`). Generated code never sees a host object: its
language model and utility are proxies over the channel on file descriptor FD.
"""

from __future__ import annotations

import builtins
import os
import random
import resource
import signal
import socket
import sys
import time
import traceback
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import contextlib

import protocol
import proxies

RLIMITS = {
    "cpu_seconds": resource.RLIMIT_CPU,
    "address_space_bytes": resource.RLIMIT_AS,
    "open_files": resource.RLIMIT_NOFILE,
    "file_size_bytes": resource.RLIMIT_FSIZE,
    "core_bytes": resource.RLIMIT_CORE,
}


class InstanceTimeout(BaseException):
    """Raised by the alarm inside an algorithm call that outlived its time limit.

    A BaseException so that a generated `except Exception:` cannot swallow it.
    """


def apply_limits(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        resource.setrlimit(RLIMITS[name], (value, value))


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
        return numpy.array(spec["data"], dtype=spec["dtype"]).reshape(spec["shape"])
    if isinstance(value, list):
        return [decode_argument(item) for item in value]
    return value


def seed_generators(seed: int) -> None:
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2**32)


def raise_timeout(signum: int, frame: Any) -> None:
    raise InstanceTimeout()


def run_algorithm(sock: socket.socket, job: dict[str, Any]) -> None:
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
    for index, arguments in enumerate(job["instances"]):
        decoded = [decode_argument(argument) for argument in arguments]
        seed_generators(int(job["seed"]) + index)
        message: dict[str, Any] = {"kind": protocol.INSTANCE, "index": index, "error": None, "timed_out": False}
        started = time.perf_counter()
        try:
            signal.setitimer(signal.ITIMER_REAL, time_limit)
            output = function(*decoded)
            signal.setitimer(signal.ITIMER_REAL, 0)
            message["output"] = protocol.encode_value(output)
        except InstanceTimeout:
            message["timed_out"] = True
        except BaseException as error:
            signal.setitimer(signal.ITIMER_REAL, 0)
            message["error"] = describe_failure(error)
        message["elapsed_seconds"] = time.perf_counter() - started
        try:
            protocol.send_message(sock, message)
        except protocol.ProtocolError as error:
            message.pop("output", None)
            message["error"] = str(error)
            protocol.send_message(sock, message)
    protocol.send_message(sock, {"kind": protocol.RESULT, "value": None})


def run_improver(sock: socket.socket, job: dict[str, Any]) -> None:
    function = load_entry_point(job["source"], job["entry_point"])
    channel = proxies.Channel(sock)
    utility = proxies.Utility(channel, job["utility"])
    language_model = proxies.LanguageModel(channel, job["language_model"])
    seed_generators(int(job["seed"]))
    value = function(job["initial_solution"], utility, language_model)
    protocol.send_message(sock, {"kind": protocol.RESULT, "value": protocol.encode_value(value)})


JOBS = {"algorithm": run_algorithm, "improver": run_improver}


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    job = protocol.receive_message(sock)
    apply_limits(job["limits"])
    sys.path.extend(job["package_paths"])
    try:
        JOBS[job["job"]](sock, job)
    except BaseException as error:
        with contextlib.suppress(OSError, protocol.ProtocolError):
            protocol.send_message(sock, {"kind": protocol.FAILURE, "error": describe_failure(error)})
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        # Skip interpreter teardown: threads or atexit hooks left by generated code must not delay the exit.
        os._exit(0)


if __name__ == "__main__":
    main()
