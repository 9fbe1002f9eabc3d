"""What the host accepts from a child: frames read against hard limits and deadlines, parsed with caps, checked by kind.

Everything here treats the child's bytes as hostile. A frame is refused before it is read when
its header announces too much; its JSON is parsed only after cheap counts bound the memory it
can take; nesting, lone surrogates and numbers too long to convert are refused or repaired; and
each kind of message must have the fields of its kind with the right types. Anything else raises
`ChildMisbehaved`, which ends the child as a `protocol` violation of its own candidate. Each
message also carries when the child sent it, by the kernel's clock (SO_TIMESTAMPNS), so the host
times the child without asking it.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from selftaught.sandbox.child import protocol

#: Messages one job may send.
MAX_MESSAGES_PER_JOB = 10_000
#: JSON values (counted by separators, so an upper bound) one message, and one job, may hold.
MAX_VALUES_PER_MESSAGE = 1_000_000
MAX_VALUES_PER_JOB = 2_000_000
#: Nesting of arrays and objects in a message.
MAX_DEPTH = 64
#: Once a message has begun to arrive, it must be whole within this long (and within the job's time).
MESSAGE_SECONDS = 10.0

#: The kernel's time of sending, on Linux; Python's socket module has no name for it.
SO_TIMESTAMPNS = SCM_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")
#: Larger than any packet a child's socket lets it write, so no packet is ever cut short unnoticed.
RECEIVE_BYTES = 512 * 1024
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class ChildMisbehaved(Exception):
    """The child broke the protocol; the message says how, in words meant for the record."""


class ChildSilent(Exception):
    """The deadline passed before the child's next message was whole."""


class ChildGone(Exception):
    """The child closed its end of the channel; `reset` when it left without reading what it was sent."""

    def __init__(self, reason: str, reset: bool = False) -> None:
        super().__init__(reason)
        self.reset = reset


@dataclass(frozen=True)
class Received:
    message: dict[str, Any]
    #: When the child sent the message's last packet, on the host's monotonic clock.
    sent_at: float


class ChildReader:
    """Reads one child's messages; counts everything against the job's limits."""

    def __init__(self, sock: socket.socket, started: float) -> None:
        self._sock = sock
        self._started = started
        with contextlib.suppress(OSError):  # not Linux: messages are timed on arrival instead
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._buffer = bytearray()
        #: Event messages that came in packets of their own (protocol.ALONE_TAIL), not yet taken.
        self._alone: list[bytes] = []
        self._partial_since: float | None = None
        self._last_sent_at = started
        self.messages = 0
        self.bytes = 0
        self.values = 0

    def receive(self, deadline: float) -> Received:
        """The next whole message; raises ChildSilent, ChildGone or ChildMisbehaved."""
        while True:
            received = self._take()
            if received is not None:
                return received
            now = time.monotonic()
            limit = deadline if self._partial_since is None else min(deadline, self._partial_since + MESSAGE_SECONDS)
            if now >= limit:
                raise ChildSilent("no message" if self._partial_since is None else "a message arrived too slowly")
            self._sock.settimeout(limit - now)
            try:
                data, ancillary, flags, _ = self._sock.recvmsg(RECEIVE_BYTES, _ANCILLARY_BYTES)
            except TimeoutError:
                continue
            except ConnectionResetError as error:
                # The child left without reading all it was sent; what it sent before is still there.
                data, ancillary, flags = self._after_reset(error)
            if not data:
                raise ChildGone("the child closed the channel")
            if flags & socket.MSG_TRUNC:
                raise ChildMisbehaved(f"a packet larger than {RECEIVE_BYTES} bytes")
            self._arrived(data, ancillary)

    def _after_reset(self, error: OSError) -> tuple[bytes, list[tuple[int, int, bytes]], int]:
        try:
            data, ancillary, flags, _ = self._sock.recvmsg(RECEIVE_BYTES, _ANCILLARY_BYTES, socket.MSG_DONTWAIT)
        except OSError:
            data = b""
        if not data:
            raise ChildGone(str(error), reset=True) from None
        return data, ancillary, flags

    def _arrived(self, data: bytes, ancillary: list[tuple[int, int, bytes]]) -> None:
        arrival = time.monotonic()
        self.bytes += len(data)
        if self.bytes > protocol.MAX_CHILD_JOB_BYTES + MAX_MESSAGES_PER_JOB * protocol.HEADER.size:
            raise ChildMisbehaved(f"more than {protocol.MAX_CHILD_JOB_BYTES} bytes in one job")
        delay = 0.0
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                delay = time.time() - (seconds + nanoseconds / 1e9)
        # The wall clock may have been stepped meanwhile: a delay is never negative nor older than the job.
        self._last_sent_at = max(arrival - min(max(delay, 0.0), arrival - self._started), self._last_sent_at)
        if data[4:8] == protocol.ALONE_MARK:  # a report of the child's audit hook: one message by itself
            if protocol.HEADER.unpack_from(data)[0] != len(data) - protocol.HEADER.size:
                raise ChildMisbehaved("a packet marked as a message of its own that is not one")
            self._alone.append(data[protocol.HEADER.size :])
            return
        if self._partial_since is None:
            self._partial_since = arrival
        self._buffer += data

    def _take(self) -> Received | None:
        if self._alone:
            message = self._counted(self._alone.pop(0))
            if message.message["kind"] != protocol.EVENT:
                raise ChildMisbehaved("a packet of its own holding something other than an event")
            return message
        if len(self._buffer) < protocol.HEADER.size:
            return None
        json_size, tail_size = protocol.HEADER.unpack_from(self._buffer)
        if tail_size:
            raise ChildMisbehaved("a message with a binary part")
        if json_size > protocol.MAX_CHILD_MESSAGE_BYTES:
            raise ChildMisbehaved(f"a message of {json_size} bytes (at most {protocol.MAX_CHILD_MESSAGE_BYTES})")
        end = protocol.HEADER.size + json_size
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[protocol.HEADER.size : end])
        del self._buffer[:end]
        self._partial_since = time.monotonic() if self._buffer else None
        return self._counted(payload)

    def _counted(self, payload: bytes) -> Received:
        self.messages += 1
        if self.messages > MAX_MESSAGES_PER_JOB:
            raise ChildMisbehaved(f"more than {MAX_MESSAGES_PER_JOB} messages")
        values = payload.count(b",") + payload.count(b":") + 1
        self.values += values
        if values > MAX_VALUES_PER_MESSAGE or self.values > MAX_VALUES_PER_JOB:
            raise ChildMisbehaved(
                f"more than {MAX_VALUES_PER_MESSAGE} values in a message or {MAX_VALUES_PER_JOB} in a job"
            )
        return Received(parse(payload), self._last_sent_at)


def parse(payload: bytes) -> dict[str, Any]:
    """A message from its JSON bytes, or ChildMisbehaved; strings come back encodable, nesting bounded.

    The parser itself stops at Python's recursion limit; a message other than outputs must also
    nest no deeper than MAX_DEPTH, since the host keeps or answers it with recursive code.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ChildMisbehaved("a message that is not UTF-8") from None
    try:
        message = json.loads(text)
    except RecursionError:
        raise ChildMisbehaved(f"a message nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:  # malformed JSON, or an integer too long to convert
        raise ChildMisbehaved(f"a malformed message: {str(error)[:200]}") from None
    if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
        raise ChildMisbehaved("a message that is not an object with a string 'kind'")
    # Outputs are judged by code that bounds its own nesting; anything else kept or answered is bounded here.
    deep = message["kind"] != protocol.OUTPUTS and payload.count(b"[") + payload.count(b"{") > MAX_DEPTH
    surrogates = _SURROGATE_ESCAPE.search(text) is not None
    if surrogates or deep:
        message = _bounded(message, surrogates)
    return message


def _bounded(value: Any, repair_strings: bool) -> Any:
    """Checks the nesting depth; with `repair_strings`, replaces lone surrogates (which no file or terminal takes)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ChildMisbehaved(f"a message nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, list):
            for position, child in enumerate(item):
                if repair_strings and isinstance(child, str):
                    item[position] = _encodable(child)
                elif isinstance(child, (list, dict)):
                    stack.append((child, depth + 1))
        elif isinstance(item, dict):
            for key in list(item):
                child = item[key]
                if repair_strings and isinstance(key, str) and _encodable(key) != key:
                    del item[key]
                    key = _encodable(key)
                    item[key] = child
                if repair_strings and isinstance(child, str):
                    item[key] = _encodable(child)
                elif isinstance(child, (list, dict)):
                    stack.append((child, depth + 1))
    return value


def _encodable(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


# --- what each kind of message must hold -------------------------------------------------------

#: The event names a child's runtime sends.
EVENT_NAMES = frozenset({"sandbox_layer_missing", "sandbox_violation", "budget_tampering"})
MAX_METHOD_CHARS = 100


def checked(message: dict[str, Any]) -> dict[str, Any]:
    """The message if its fields fit its kind; ChildMisbehaved otherwise (the kind itself is checked by the caller)."""
    kind = message["kind"]
    if kind == protocol.CALL:
        _require(message, "id", int)
        _require(message, "method", str)
        _require(message, "params", dict)
        if len(message["method"]) > MAX_METHOD_CHARS:
            raise ChildMisbehaved("a call with an overlong method name")
    elif kind == protocol.EVENT:
        _require(message, "name", str)
        _require(message, "detail", dict)
        if message["name"] not in EVENT_NAMES:
            raise ChildMisbehaved(f"an event of unknown name {message['name'][:50]!r}")
    elif kind == protocol.OUTPUTS:
        _require(message, "results", list)
    elif kind == protocol.FAILURE:
        _require(message, "error", str)
    elif kind == protocol.RESULT and "value" not in message:
        raise ChildMisbehaved("a result without a value")
    return message


def _require(message: dict[str, Any], field: str, kind: type) -> None:
    value = message.get(field)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ChildMisbehaved(f"a {message['kind']!r} message whose {field!r} is not a {kind.__name__}")
