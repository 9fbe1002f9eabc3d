"""Host side of the sandbox: starts a child process for one job of generated code and serves its calls.

Every piece of generated code (improvers and algorithms) runs through `Launcher.run`. The child
gets a whitelisted environment, a private scratch directory, resource limits it applies to
itself before touching generated code, its own session (so a timeout kills the whole process
group), and a socket to the host as its only way to ask for anything. The child's wall-clock
budget excludes the time the host spends answering its calls, so a slow language model never
times out an improver.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selftaught.sandbox.child import protocol
from selftaught.sandbox.packages import PackageShim

RUNNER = Path(__file__).parent / "child" / "runner.py"

#: What a child may see of the host environment: nothing but these fixed values.
CHILD_ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    # Many BLAS threads break numpy under a small address-space limit.
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

MAX_CHILD_MESSAGES = 10_000
EXIT_GRACE_SECONDS = 2.0
REPLY_SEND_SECONDS = 10.0


class CallRefused(Exception):
    """Raised by a service to send an error text back to the child instead of a value."""


CallHandler = Callable[[str, dict[str, Any]], Any]


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one child; wall_seconds counts only the child's own time."""

    wall_seconds: float = 60.0
    cpu_seconds: int = 60
    address_space_bytes: int = 4 * 1024**3
    open_files: int = 64
    file_size_bytes: int = 16 * 1024**2
    captured_output_bytes: int = 64 * 1024

    def rlimits(self) -> dict[str, int]:
        return {
            "cpu_seconds": self.cpu_seconds,
            "address_space_bytes": self.address_space_bytes,
            "open_files": self.open_files,
            "file_size_bytes": self.file_size_bytes,
            "core_bytes": 0,
        }


@dataclass(frozen=True)
class ChildOutcome:
    """What came back from a child: data only, nothing it printed is trusted."""

    result: Any = None
    has_result: bool = False
    failure: str | None = None  # the generated code raised; its message
    violation: str | None = None  # the child broke a rule and was killed
    timed_out: bool = False
    exit_code: int | None = None
    instances: tuple[dict[str, Any], ...] = ()
    events: tuple[dict[str, Any], ...] = ()
    stdout: str = ""
    stderr: str = ""
    own_seconds: float = 0.0

    @property
    def problem(self) -> str | None:
        """One line saying why the job gave no result, or None when it did."""
        if self.timed_out:
            return "timed out"
        if self.violation:
            return self.violation
        if self.failure:
            return self.failure
        if not self.has_result:
            return f"exited without a result ({describe_exit(self.exit_code)})"
        return None


def describe_exit(exit_code: int | None) -> str:
    if exit_code is None:
        return "still running when killed"
    if exit_code >= 0:
        return f"exit code {exit_code}"
    try:
        name = signal.Signals(-exit_code).name
    except ValueError:
        name = f"signal {-exit_code}"
    return f"killed by {name}{SIGNAL_MEANINGS.get(name, '')}"


SIGNAL_MEANINGS = {
    "SIGXCPU": ": CPU time limit",
    "SIGXFSZ": ": file size limit",
    "SIGSEGV": ": crashed, often the memory limit",
    "SIGKILL": "",
}


@dataclass
class _CappedReader:
    """Drains a pipe to the end, keeping only the first `cap` bytes, so a flood never blocks the child."""

    stream: Any
    cap: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        try:
            while chunk := self.stream.read1(65536):
                room = self.cap - len(self.data)
                if room > 0:
                    self.data.extend(chunk[:room])
                if len(chunk) > max(room, 0):
                    self.truncated = True
        except (OSError, ValueError):
            pass

    def text(self) -> str:
        self.thread.join(timeout=1.0)
        suffix = "\n[output truncated]" if self.truncated else ""
        return self.data.decode("utf-8", errors="replace") + suffix


class Launcher:
    """Runs jobs of generated code in child processes. One per host; safe to reuse."""

    def __init__(self, allowed_packages: tuple[str, ...] = ("numpy",)) -> None:
        self._shim = PackageShim(allowed_packages)

    def close(self) -> None:
        self._shim.close()

    def run(
        self,
        job: Mapping[str, Any],
        limits: SandboxLimits,
        serve: CallHandler | None = None,
    ) -> ChildOutcome:
        scratch = tempfile.mkdtemp(prefix="selftaught-child-")
        host_end, child_end = socket.socketpair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-S", "-s", "-B", "-u", str(RUNNER), str(child_end.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(child_end.fileno(),),
                cwd=scratch,
                env={**CHILD_ENVIRONMENT, "HOME": scratch, "TMPDIR": scratch},
                start_new_session=True,
            )
        except OSError:
            host_end.close()
            child_end.close()
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        child_end.close()
        stdout = _CappedReader(process.stdout, limits.captured_output_bytes)
        stderr = _CappedReader(process.stderr, limits.captured_output_bytes)
        outcome: dict[str, Any] = {}
        try:
            full_job = {
                "kind": protocol.JOB,
                **job,
                "limits": limits.rlimits(),
                "package_paths": self._shim.paths(),
            }
            protocol.send_message(host_end, full_job)
            outcome = _serve(host_end, limits.wall_seconds, serve)
        except (OSError, protocol.ProtocolError) as error:
            outcome = {"violation": f"channel to the child failed: {error}"}
        finally:
            host_end.close()
            finished = "result" in outcome or "failure" in outcome
            exit_code = _reap(process, kill_now=not finished)
            shutil.rmtree(scratch, ignore_errors=True)
        return ChildOutcome(**outcome, exit_code=exit_code, stdout=stdout.text(), stderr=stderr.text())


def _serve(sock: socket.socket, wall_seconds: float, serve: CallHandler | None) -> dict[str, Any]:
    """Answers the child's calls until it reports a result, fails, breaks a rule or runs out of time."""
    remaining = wall_seconds
    own_seconds = 0.0
    instances: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []

    def outcome(**fields: Any) -> dict[str, Any]:
        return {"instances": tuple(instances), "events": tuple(events), "own_seconds": own_seconds, **fields}

    for _ in range(MAX_CHILD_MESSAGES):
        if remaining <= 0:
            return outcome(timed_out=True)
        sock.settimeout(remaining)
        waiting_since = time.monotonic()
        try:
            message = protocol.receive_message(sock)
        except TimeoutError:
            own_seconds += time.monotonic() - waiting_since
            return outcome(timed_out=True)
        except protocol.PeerClosed:
            own_seconds += time.monotonic() - waiting_since
            return outcome()
        except protocol.ProtocolError as error:
            return outcome(violation=f"protocol violation: {error}")
        waited = time.monotonic() - waiting_since
        remaining -= waited
        own_seconds += waited
        kind = message["kind"]
        if kind == protocol.CALL:
            sock.settimeout(REPLY_SEND_SECONDS)
            protocol.send_message(sock, _answer(message, serve))
        elif kind == protocol.EVENT:
            events.append({"name": str(message.get("name"))[:100], "detail": message.get("detail")})
        elif kind == protocol.INSTANCE:
            instances.append(message)
        elif kind == protocol.RESULT:
            return outcome(result=message.get("value"), has_result=True)
        elif kind == protocol.FAILURE:
            return outcome(failure=str(message.get("error"))[:2000])
        else:
            return outcome(violation=f"protocol violation: unknown message kind {kind[:50]!r}")
    return outcome(violation=f"protocol violation: more than {MAX_CHILD_MESSAGES} messages")


def _answer(message: dict[str, Any], serve: CallHandler | None) -> dict[str, Any]:
    reply: dict[str, Any] = {"kind": protocol.REPLY, "id": message.get("id")}
    method, params = message.get("method"), message.get("params")
    if serve is None or not isinstance(method, str) or not isinstance(params, dict):
        return {**reply, "ok": False, "error": "no such service"}
    try:
        return {**reply, "ok": True, "value": serve(method, params)}
    except CallRefused as refusal:
        return {**reply, "ok": False, "error": str(refusal)}


def _reap(process: subprocess.Popen[bytes], kill_now: bool) -> int | None:
    """Kills the child's whole process group, after a short grace period when it finished its job."""
    if not kill_now:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=EXIT_GRACE_SECONDS)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    try:
        return process.wait(timeout=EXIT_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        return None
