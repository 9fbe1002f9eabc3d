"""What a Ray node may return for a job: checked on the host as a child's messages are, before anything uses it."""

from __future__ import annotations

import math
from typing import Any

from selftaught.sandbox.outcome import ChildOutcome, SandboxLimits

#: The longest failure or violation message a sandbox returns (it cuts the child's at 2000 characters).
MAX_MESSAGE_CHARS = 4000
#: The keys of one instance's output as the host's session makes it; `output` and `late` are not always there.
INSTANCE_KEYS = frozenset({"index", "timed_out", "error", "seconds"})
INSTANCE_OPTIONAL_KEYS = frozenset({"output", "late"})


class NodeReturned(Exception):
    """A node returned what no honest sandbox returns; the message says what, in one line."""


def checked_outcome(value: Any, span: tuple[int, int], limits: SandboxLimits) -> ChildOutcome:
    """`value` if it is an outcome a sandbox could return for instances `span` (first, count), else NodeReturned."""
    if type(value) is not ChildOutcome:
        raise NodeReturned(f"a {type(value).__name__}, not a ChildOutcome")
    for name in ("has_result", "timed_out", "output_truncated"):
        if type(getattr(value, name)) is not bool:
            raise NodeReturned(f"{name} that is not true or false")
    for name in ("failure", "violation"):
        _check_text(getattr(value, name), name, MAX_MESSAGE_CHARS, optional=True)
    _check_text(value.output, "output", limits.captured_output_bytes, optional=False)
    if value.exit_code is not None and type(value.exit_code) is not int:
        raise NodeReturned("an exit code that is not a number")
    if not _seconds(value.own_seconds):
        raise NodeReturned("a time that is not a number of seconds")
    first, count = span
    stopped = value.stopped_at
    if stopped is not None and (type(stopped) is not int or not first <= stopped < count):
        raise NodeReturned(f"a stop at instance {str(stopped)[:20]}, not one of {first} to {count - 1}")
    if type(value.instances) is not tuple or len(value.instances) > count - first:
        raise NodeReturned("instances that are not a tuple of at most the job's instances")
    for message in value.instances:
        _check_instance(message, first, count)
    if type(value.events) is not tuple:
        raise NodeReturned("events that are not a tuple")
    for event in value.events:
        if type(event) is not dict or type(event.get("name")) is not str or type(event.get("detail")) is not dict:
            raise NodeReturned("an event that is not a name with its detail")
    return value


def _check_instance(message: Any, first: int, count: int) -> None:
    if type(message) is not dict or not INSTANCE_KEYS <= message.keys() <= INSTANCE_KEYS | INSTANCE_OPTIONAL_KEYS:
        raise NodeReturned("an instance's output that is not an object with the expected keys")
    index = message["index"]
    if type(index) is not int or not first <= index < count:
        raise NodeReturned(f"the output of instance {str(index)[:20]}, not one of {first} to {count - 1}")
    if type(message["timed_out"]) is not bool or type(message.get("late", False)) is not bool:
        raise NodeReturned(f"instance {index}'s output has flags that are not true or false")
    _check_text(message["error"], f"instance {index}'s error", MAX_MESSAGE_CHARS, optional=True)
    if not _seconds(message["seconds"]):
        raise NodeReturned(f"instance {index}'s time is not a number of seconds")


def _check_text(value: Any, name: str, longest: int, *, optional: bool) -> None:
    if value is None and optional:
        return
    if type(value) is not str or len(value) > longest:
        raise NodeReturned(f"{name} that is not text of at most {longest} characters")


def _seconds(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and 0 <= value < 1e9
