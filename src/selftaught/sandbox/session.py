"""The host's side of one job's conversation with its child: what it sends, what it accepts, and when it stops.

The host decides when a job is over and how long it took. An improver job ends with its result,
its failure, a broken rule or the end of its time, which excludes the time the host spends
answering its calls. An algorithm job runs in steps: the child loads the solution and says so;
only then does the host send the instances, and the child sends their outputs in batches, at least
one per flush interval, each with the time the child claims for it. The kernel stamps every batch with
when it was sent, and the claims must add up to those intervals (BatchClock), so a child that stops
its alarm or rewrites its own clock gains nothing; a child silent well past an instance's limit is
stopped there. Events are kept up to a bound, and their
details cut to size before anything stores them.
"""

from __future__ import annotations

import collections
import contextlib
import json
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

#: How long a child may take to start, before its solution loads: a fork of the zygote, or a fresh interpreter.
FORKED_STARTUP_SECONDS = 2.0
SPAWNED_STARTUP_SECONDS = 10.0
#: How long the host waits past an instance's limit before it stops the child: the child's own alarm
#: ends an honest instance at the limit, unless a long call into native code holds it up.
MIN_GRACE_SECONDS = 1.0
REPLY_SEND_SECONDS = 10.0
#: How far the times a child claims for a batch of instances may exceed the interval the kernel saw.
CLAIM_TOLERANCE_SECONDS = 0.002
#: Unclaimed time in a batch not charged to its instances: the runner's own work (decoding arguments,
#: encoding outputs), which an honest instance just under its limit must not be blamed for.
RUNNER_SECONDS = 0.005
RUNNER_SECONDS_PER_INSTANCE = 0.001
#: Events kept per job, of the sandbox's reports and of other events each; past that only their number
#: (a violation of its own, so that a child cannot flood the record to push its reports out of it).
MAX_EVENTS = 100
#: Longest stored event detail, as JSON.
MAX_EVENT_DETAIL_CHARS = 2000


class CallRefused(Exception):
    """Raised by a service to send an error text back to the child instead of a value."""


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
        startup_seconds: float = SPAWNED_STARTUP_SECONDS,
    ) -> None:
        self._sock = sock
        self._startup_seconds = startup_seconds
        self._job_frame = job_frame
        self._serve = serve
        self._instances = instances
        self._time_limit = time_limit
        self._started = time.monotonic()
        #: Moves later by the time spent answering calls: the child's time excludes the host's.
        self._deadline = self._started + wall_seconds
        self._serving_seconds = 0.0
        # Created before anything is sent: the kernel stamps what arrives from then on.
        self._reader = ChildReader(sock, self._started)
        self._events: list[dict[str, Any]] = []
        self._kept_events: collections.Counter[bool] = collections.Counter()
        self._dropped_events = 0
        self._outputs: list[dict[str, Any]] = []

    def run(self, first_instance: int = 0, then: Callable[[], None] | None = None) -> dict[str, Any]:
        """The job's outcome; `then` is called once the job is sent (the host's own work, done while the child starts)."""
        try:
            # A child gone already may have said why on the channel: read on.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                protocol.send_frames(self._sock, self._job_frame)
            if then is not None:
                then()
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

    def _next(self, deadline: float, *kinds: str) -> Received:
        """The next message of one of `kinds`, answering calls and keeping events on the way."""
        while True:
            received = self._reader.receive(min(deadline, self._deadline))
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
        loaded = self._next(self._started + self._startup_seconds + limit + grace, protocol.READY, protocol.FAILURE)
        if loaded.message["kind"] == protocol.FAILURE:
            return self._outcome(failure=loaded.message["error"][:2000])
        # Only now: no instance is anywhere the solution's module-level code could reach while it loads.
        # Their time starts before they leave: a host that loses its core right after sending must not
        # date them later than the child's first outputs.
        frames = self._instances.frame(first)
        clock = BatchClock(first, time.monotonic(), limit)
        protocol.send_frames(self._sock, frames)
        while clock.expected < len(self._instances):
            # The next batch is due once the instances after the last one could have filled a flush
            # interval, plus one whole instance: its limit and the grace the host allows past it.
            due = clock.last_sent_at + protocol.FLUSH_SECONDS + limit + grace
            try:
                received = self._next(due, protocol.OUTPUTS, protocol.RESULT)
            except ChildSilent:
                if time.monotonic() >= self._deadline:
                    raise
                # Still running past an instance's limit: it timed out, by the host's clock.
                seconds = time.monotonic() - clock.last_sent_at
                self._outputs.append({"index": clock.expected, "timed_out": True, "error": None, "seconds": seconds})
                return self._outcome(stopped_at=clock.expected)
            if received.message["kind"] == protocol.RESULT:
                raise ChildMisbehaved(f"done before the output of instance {clock.expected}")
            self._outputs.extend(clock.judge(received.message["results"], received.sent_at))
        return self._outcome(has_result=True)

    def _keep_event(self, message: dict[str, Any]) -> None:
        report = message["name"] == "sandbox_violation"
        if self._kept_events[report] >= MAX_EVENTS:
            self._dropped_events += 1
            return
        self._kept_events[report] += 1
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


class BatchClock:
    """Holds a child to the times it claims for its instances, against when the kernel saw each batch sent.

    In a batch, the instances ran one after another between the previous batch (or the instances'
    arrival) and this one. Time in that interval that the child does not claim (waiting for a core,
    or time hidden by a child that stopped its alarm and rewrote its clock), beyond a small
    allowance for the runner's own work, is charged to each instance of the batch, since any of
    them could have used it; an instance whose claim plus that charge is over the limit timed out. Claims adding up to more than
    the interval, or, for all but the last instance, to more than one flush interval (the runner
    sends what it has as soon as that interval is over), cannot come from an honest runner: every
    instance of such a batch is judged timed out. Either way the host's clock, not the child's,
    decides; where they disagree on a verdict the instance is marked `late` (a `clock_disagreement`).
    """

    def __init__(self, first: int, instances_sent_at: float, limit: float) -> None:
        self.expected = first
        self.last_sent_at = instances_sent_at
        self._limit = limit

    def judge(self, results: Any, sent_at: float) -> list[dict[str, Any]]:
        if not isinstance(results, list) or not results:
            raise ChildMisbehaved("an 'outputs' message without results")
        judged = [self._checked(result, self.expected + position) for position, result in enumerate(results)]
        claimed = [result["seconds"] for result in judged]
        unclaimed = sent_at - self.last_sent_at - sum(claimed)
        possible = unclaimed >= -CLAIM_TOLERANCE_SECONDS and sum(claimed[:-1]) <= protocol.FLUSH_SECONDS + (
            CLAIM_TOLERANCE_SECONDS
        )
        charge = max(unclaimed - RUNNER_SECONDS - RUNNER_SECONDS_PER_INSTANCE * len(judged), 0.0)
        for result in judged:
            charged = result["seconds"] + charge
            over = not possible or charged > self._limit
            result["late"] = over and not result["timed_out"] and result["seconds"] <= self._limit
            result["timed_out"] = result["timed_out"] or over
            result["seconds"] = charged
        self.expected += len(judged)
        self.last_sent_at = sent_at
        return judged

    @staticmethod
    def _checked(result: Any, index: int) -> dict[str, Any]:
        if not isinstance(result, dict):
            raise ChildMisbehaved("an output that is not an object")
        if result.get("index") != index or isinstance(result.get("index"), bool):
            raise ChildMisbehaved(f"the output of instance {str(result.get('index'))[:20]} where {index} was due")
        seconds, timed_out, error = result.get("seconds"), result.get("timed_out"), result.get("error")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 <= seconds < 1e9:
            raise ChildMisbehaved(f"instance {index}'s time is not a number of seconds")
        if not isinstance(timed_out, bool) or not (error is None or isinstance(error, str)):
            raise ChildMisbehaved(f"instance {index}'s output has fields of the wrong type")
        return {
            "index": index,
            "output": result.get("output"),
            "error": error[:2000] if error else None,
            "timed_out": timed_out,
            "seconds": float(seconds),
        }
