"""Limits of one child and what comes back from it: data, failures, and the sandbox violations it committed."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

from selftaught.sandbox.child import protocol


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
    violation: str | None = None  # the child broke the protocol and was killed
    timed_out: bool = False
    exit_code: int | None = None
    instances: tuple[dict[str, Any], ...] = ()
    events: tuple[dict[str, Any], ...] = ()
    #: What the child wrote to stdout and stderr, up to the capture limit.
    output: str = ""
    output_truncated: bool = False
    own_seconds: float = 0.0
    #: The instance at whose time limit the host stopped the child; the instances after it did not run.
    stopped_at: int | None = None
    #: The Ray node the host sent the job to (`--executor ray`), from the host's own record; None on this machine.
    node: str | None = None

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

    @property
    def stopped_by_host(self) -> bool:
        """The host ended the child before it was done (its time, a broken rule): a kill signal is then no news."""
        return self.timed_out or self.violation is not None or self.stopped_at is not None

    @property
    def violations(self) -> list[dict[str, str]]:
        """Every attempt against the sandbox and every limit hit, as {kind, detail}."""
        found = [
            {"kind": str(event["detail"].get("kind")), "detail": str(event["detail"].get("detail"))[:300]}
            for event in self.events
            if event["name"] == "sandbox_violation" and isinstance(event.get("detail"), dict)
        ]
        # Counted by the host; a child may send an event of that name too, whose count is not trusted to be a number.
        dropped = sum(
            count
            for event in self.events
            if event["name"] == "events_dropped" and isinstance(event.get("detail"), dict)
            for count in [event["detail"].get("count")]
            if type(count) is int and count > 0
        )
        if dropped:
            found.append({"kind": "protocol", "detail": f"{dropped} events past the host's limit were dropped"})
        if self.timed_out:
            found.append({"kind": "wall_time_limit", "detail": "killed at its wall-clock limit"})
        if self.violation:
            found.append({"kind": "protocol", "detail": self.violation})
        if self.exit_code in (-signal.SIGXCPU, protocol.EXIT_CPU_LIMIT):
            found.append({"kind": "cpu_time_limit", "detail": describe_exit(self.exit_code)})
        elif self.exit_code == protocol.EXIT_STOPPED_BY_WATCH:
            found.append({"kind": "tampering", "detail": describe_exit(self.exit_code)})
        elif self.exit_code is not None and self.exit_code < 0 and not self.stopped_by_host:
            found.append({"kind": "killed", "detail": describe_exit(self.exit_code)})
        if not (self.has_result or self.failure or self.timed_out or self.violation) and self.exit_code == 0:
            found.append({"kind": "early_exit", "detail": "exited before reporting a result"})
        if self.output_truncated:
            found.append({"kind": "output_flood", "detail": "stdout and stderr exceeded the capture limit"})
        timeouts = sum(1 for message in self.instances if message.get("timed_out"))
        if timeouts:
            found.append({"kind": "instance_time_limit", "detail": f"{timeouts} instance(s) timed out"})
        late = [str(message["index"]) for message in self.instances if message.get("late")]
        if late:
            detail = (
                f"instance(s) {', '.join(late[:10])} ran past the limit by the host's clock; the child said otherwise"
            )
            found.append({"kind": "clock_disagreement", "detail": detail})
        if self.stopped_at is not None:
            detail = f"still running past instance {self.stopped_at}'s time limit; stopped by the host"
            found.append({"kind": "instance_time_limit", "detail": detail})
        if any("MemoryError" in str(message.get("error")) for message in self.instances) or "MemoryError" in str(
            self.failure
        ):
            found.append({"kind": "memory_limit", "detail": "MemoryError under the address-space limit"})
        return found


SIGNAL_MEANINGS = {
    "SIGXCPU": ": CPU time limit",
    "SIGXFSZ": ": file size limit",
    "SIGSEGV": ": crashed, often the memory limit",
    "SIGSYS": ": a forbidden system call",
}


def describe_exit(exit_code: int | None) -> str:
    if exit_code is None:
        return "still running when killed"
    if exit_code == protocol.EXIT_CPU_LIMIT:
        return "stopped at its CPU time limit"
    if exit_code == protocol.EXIT_STOPPED_BY_WATCH:
        return "stopped by the sandbox: it tampered with its reporter or kept trying what the sandbox forbids"
    if exit_code >= 0:
        return f"exit code {exit_code}"
    try:
        name = signal.Signals(-exit_code).name
    except ValueError:
        name = f"signal {-exit_code}"
    return f"killed by {name}{SIGNAL_MEANINGS.get(name, '')}"
