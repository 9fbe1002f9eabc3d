"""The host's side of one job's conversation with its child: what it sends, what it accepts, and when it stops.

The host decides when a job is over and how long it took. An improver job ends with its result,
its failure, a broken rule or the end of its time, which excludes the time the host spends
answering its calls. An algorithm job runs in steps: the child loads the solution and says so;
only then does it receive its instances, and it sends each instance's output as soon as that
instance ends. Each instance's time is the time between two of those messages by the kernel's
clock, so a child that stops its alarm or rewrites its own clock gains nothing; a child still
silent well past an instance's limit is stopped there. Events are kept up to a bound, and their
details cut to size before anything stores them.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from typing import Any

from selftaught.sandbox.child import protocol
from selftaught.sandbox.child_messages import (
    ChildGone,
    ChildMisbehaved,
    ChildReader,
    ChildSilent,
    Received,
    checked,
)
from selftaught.sandbox.executor import CallHandler
from selftaught.sandbox.instance_data import EncodedInstances

#: How long a child may take to start and load its solution, beyond one instance's limit.
STARTUP_SECONDS = 10.0
#: How long the host waits past an instance's limit before it stops the child: the child's own alarm
#: ends an honest instance at the limit, unless a long call into native code holds it up.
MIN_GRACE_SECONDS = 1.0
REPLY_SEND_SECONDS = 10.0
#: An instance ran past its limit, by the host's clock, when it took longer than this (the margin covers
#: the child's own work between two instances and its scheduling).
TIME_TOLERANCE_FRACTION = 0.05
TIME_TOLERANCE_SECONDS = 0.02
#: Events kept per job; past that only their number.
MAX_EVENTS = 100
#: Longest stored event detail, as JSON.
MAX_EVENT_DETAIL_CHARS = 2000


class CallRefused(Exception):
    """Raised by a service to send an error text back to the child instead of a value."""


def allowed_seconds(time_limit: float) -> float:
    """The longest an instance may take by the host's clock before it counts as timed out."""
    return time_limit * (1 + TIME_TOLERANCE_FRACTION) + TIME_TOLERANCE_SECONDS


def grace_seconds(time_limit: float) -> float:
    """How long past an instance's limit the host waits for its output before stopping the child."""
    return max(MIN_GRACE_SECONDS, time_limit)


class Conversation:
    """Runs one job's exchange on a started child's channel; `run` returns the outcome's fields, never raising for the child."""

    def __init__(
        self,
        sock: Any,
        job_frame: bytes,
        wall_seconds: float,
        serve: CallHandler | None,
        instances: EncodedInstances | None = None,
        time_limit: float = 0.0,
    ) -> None:
        self._sock = sock
        self._job_frame = job_frame
        self._serve = serve
        self._instances = instances
        self._time_limit = time_limit
        self._started = time.monotonic()
        #: Moves later by the time spent answering calls: the child's time excludes the host's.
        self._deadline = self._started + wall_seconds
        self._serving_seconds = 0.0
        self._reader = ChildReader(sock, self._started)
        self._events: list[dict[str, Any]] = []
        self._dropped_events = 0
        self._outputs: list[dict[str, Any]] = []

    def run(self, first_instance: int = 0) -> dict[str, Any]:
        try:
            # A child gone already may have said why on the channel: read on.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                protocol.send_frames(self._sock, self._job_frame)
            if self._instances is None:
                return self._until_result()
            return self._algorithm(first_instance)
        except ChildMisbehaved as error:
            return self._outcome(violation=f"protocol violation: {error}")
        except ChildSilent:
            return self._outcome(timed_out=True)
        except ChildGone as gone:
            if gone.reset and self._reader.messages == 0:
                # Reset before the child said anything: it never read its whole job, so no generated code ran.
                return self._outcome(violation=f"channel to the child failed: {gone}", job_unread=True)
            return self._outcome()
        except (OSError, protocol.ProtocolError) as error:
            return self._outcome(violation=f"channel to the child failed: {error}")

    def _outcome(self, **fields: Any) -> dict[str, Any]:
        events = list(self._events)
        if self._dropped_events:
            events.append({"name": "events_dropped", "detail": {"count": self._dropped_events}})
        own_seconds = time.monotonic() - self._started - self._serving_seconds
        return {"instances": tuple(self._outputs), "events": tuple(events), "own_seconds": own_seconds, **fields}

    def _next(self, deadline: float, *kinds: str, pump: Callable[[], bool] | None = None) -> Received:
        """The next message of one of `kinds`, answering calls and keeping events on the way."""
        while True:
            received = self._reader.receive(min(deadline, self._deadline), pump)
            message = received.message
            kind = message["kind"]
            if kind == protocol.EVENT:
                self._keep_event(checked(message))
            elif kind == protocol.CALL:
                self._answer(checked(message))
                deadline += self._last_answer_seconds
            elif kind in kinds:
                return Received(checked(message), received.sent_at)
            else:
                raise ChildMisbehaved(f"an unexpected {kind[:50]!r} message")

    def _until_result(self) -> dict[str, Any]:
        message = self._next(self._deadline, protocol.RESULT, protocol.FAILURE).message
        if message["kind"] == protocol.FAILURE:
            return self._outcome(failure=message["error"][:2000])
        return self._outcome(result=message["value"], has_result=True)

    def _algorithm(self, first: int) -> dict[str, Any]:
        assert self._instances is not None
        limit, grace = self._time_limit, grace_seconds(self._time_limit)
        loaded = self._next(self._started + STARTUP_SECONDS + limit + grace, protocol.READY, protocol.FAILURE)
        if loaded.message["kind"] == protocol.FAILURE:
            return self._outcome(failure=loaded.message["error"][:2000])
        pending = _InstanceSender(self._sock, self._instances.frames[first:], first)
        pending.send_what_fits()
        previous = time.monotonic()
        for index in range(first, len(self._instances)):
            try:
                due = max(previous, pending.sent_at(index)) + limit + grace
                received = self._next(due, protocol.OUTPUT, pump=pending.send_what_fits)
            except ChildSilent:
                if time.monotonic() >= self._deadline:
                    raise
                # Stopped at this instance's limit: the instance timed out, by the host's clock.
                seconds = time.monotonic() - max(previous, pending.sent_at(index))
                self._outputs.append({"index": index, "timed_out": True, "error": None, "seconds": seconds})
                return self._outcome(stopped_at=index)
            pending.send_what_fits()
            output = received.message
            if output["index"] != index:
                raise ChildMisbehaved(f"the output of instance {output['index']} where {index} was due")
            # The instance's time began when the child had both finished the one before and received it.
            started = max(previous, pending.sent_at(index))
            error, seconds = output.get("error"), max(received.sent_at - started, 0.0)
            late = seconds > allowed_seconds(limit) and not output["timed_out"]
            self._outputs.append(
                {
                    "index": index,
                    "output": output.get("output"),
                    "error": error[:2000] if error else None,
                    "timed_out": output["timed_out"] or late,
                    "late": late,
                    "seconds": seconds,
                }
            )
            previous = received.sent_at
        return self._outcome(has_result=True)

    def _keep_event(self, message: dict[str, Any]) -> None:
        if len(self._events) >= MAX_EVENTS:
            self._dropped_events += 1
            return
        detail = message["detail"]
        text = json.dumps(detail, default=str)
        if len(text) > MAX_EVENT_DETAIL_CHARS:
            detail = {"truncated": text[:MAX_EVENT_DETAIL_CHARS]}
        self._events.append({"name": message["name"], "detail": detail})

    _last_answer_seconds = 0.0

    def _answer(self, message: dict[str, Any]) -> None:
        started = time.monotonic()
        reply: dict[str, Any] = {"kind": protocol.REPLY, "id": message["id"]}
        if self._serve is None:
            reply.update(ok=False, error="no such service")
        else:
            try:
                reply.update(ok=True, value=self._serve(message["method"], message["params"]))
            except CallRefused as refusal:
                reply.update(ok=False, error=str(refusal))
        self._last_answer_seconds = time.monotonic() - started
        self._serving_seconds += self._last_answer_seconds
        self._deadline += self._last_answer_seconds
        self._sock.settimeout(REPLY_SEND_SECONDS)
        try:
            protocol.send_message(self._sock, reply)
        except TimeoutError:
            raise ChildMisbehaved("the child stopped reading its replies") from None


class _InstanceSender:
    """Sends instance messages as far as the child's socket takes them without waiting, and when each went out.

    The host never blocks on a child that does not read: what does not fit now is sent after the
    child's next output, which it sends just before it reads the next instance.
    """

    def __init__(self, sock: Any, frames: tuple[bytes, ...], first: int) -> None:
        self._sock = sock
        self._first = first
        self._packets = [
            (
                position,
                memoryview(frame)[start : start + protocol.PACKET_BYTES],
                start + protocol.PACKET_BYTES >= len(frame),
            )
            for position, frame in enumerate(frames)
            for start in range(0, len(frame), protocol.PACKET_BYTES)
        ]
        self._next_packet = 0
        self._sent_at: list[float] = []

    def send_what_fits(self) -> bool:
        """Sends packets until the socket is full; True while some are left to send."""
        while self._next_packet < len(self._packets):
            _, packet, ends_frame = self._packets[self._next_packet]
            try:
                self._sock.send(packet, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return True
            self._next_packet += 1
            if ends_frame:
                self._sent_at.append(time.monotonic())
        return False

    def sent_at(self, index: int) -> float:
        """When instance `index` was whole in the child's socket; the future for one not sent yet."""
        position = index - self._first
        return self._sent_at[position] if position < len(self._sent_at) else float("inf")
