"""What the host accepts from a child: frames read against hard limits and deadlines, parsed with caps, checked by kind.

Everything here treats the child's bytes as hostile. A frame is refused before it is read when
its header announces too much; its JSON is parsed only after cheap counts bound the memory it
can take; nesting, lone surrogates, numbers too long to convert and, in an event (which is
recorded), NaN and infinities are refused or repaired; and each kind of message must have the
fields of its kind with the right types. Anything else raises
`ChildMisbehaved`, which ends the child as a `protocol` violation of its own candidate. Each
message also carries when the child sent it, by the kernel's clock (SO_TIMESTAMPNS), so the host
times the child without asking it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from selftaught.sandbox.child import protocol
from selftaught.store.rows import finite_numbers
from selftaught.text import encodable

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
                late = self._sent_by(limit)
                if late is not None:
                    return late
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

    def _sent_by(self, limit: float) -> Received | None:
        """The next message, if the child had sent it by `limit` and only the host was late to look.

        A host held up (by other children's messages, or waiting for a core) must not blame a child
        whose message lies unread in the channel: the kernel's time of sending decides.
        """
        self._sock.settimeout(0.0)
        while True:
            try:
                data, ancillary, flags, _ = self._sock.recvmsg(RECEIVE_BYTES, _ANCILLARY_BYTES)
            except (BlockingIOError, InterruptedError, ConnectionResetError):
                return None
            if not data:
                return None
            if flags & socket.MSG_TRUNC:
                raise ChildMisbehaved(f"a packet larger than {RECEIVE_BYTES} bytes")
            self._arrived(data, ancillary)
            received = self._take()
            if received is not None:
                return received if received.sent_at <= limit else None

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
        # Every array and object is a value too: nesting alone would otherwise cost memory uncounted.
        values = payload.count(b",") + payload.count(b":") + payload.count(b"[") + payload.count(b"{") + 1
        self.values += values
        if values > MAX_VALUES_PER_MESSAGE or self.values > MAX_VALUES_PER_JOB:
            raise ChildMisbehaved(
                f"more than {MAX_VALUES_PER_MESSAGE} values in a message or {MAX_VALUES_PER_JOB} in a job"
            )
        return Received(parse(payload), self._last_sent_at)


def parse(payload: bytes) -> dict[str, Any]:
    """A message from its JSON bytes, or ChildMisbehaved; strings come back encodable, nesting bounded.

    The nesting is measured on the bytes, before anything is built: a message nested deeper than
    MAX_DEPTH is refused unparsed. The parse runs with the garbage collector paused, which would
    otherwise walk everything the host holds again and again while a large message is built.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ChildMisbehaved("a message that is not UTF-8") from None
    # A text cannot nest deeper than it has opening brackets: most messages need no measuring at all.
    if payload.count(b"[") + payload.count(b"{") > MAX_DEPTH and nesting(payload) > MAX_DEPTH:
        raise ChildMisbehaved(f"a message nested deeper than {MAX_DEPTH} levels")
    try:
        with _collector_paused():
            message = json.loads(text)
    except RecursionError:
        raise ChildMisbehaved(f"a message nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:  # malformed JSON, or an integer too long to convert
        raise ChildMisbehaved(f"a malformed message: {str(error)[:200]}") from None
    if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
        raise ChildMisbehaved("a message that is not an object with a string 'kind'")
    if _SURROGATE_ESCAPE.search(text) is not None:
        message = _repaired(message)
    return message


_NEITHER_QUOTE_NOR_BRACKET = bytes(byte for byte in range(256) if byte not in b'"[]{}')
_STEPS = np.zeros(256, dtype=np.int8)
_STEPS[[ord("["), ord("{")]] = 1
_STEPS[[ord("]"), ord("}")]] = -1
#: Brackets summed at a time: the running depth needs 4 bytes a bracket only for this many.
_CHUNK = 1 << 20


def nesting(payload: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest (brackets within strings do not count).

    Costs a few bytes of memory per byte of the text and no Python object per character, whatever
    the text holds: every step is a `bytes.replace` or a numpy pass. In valid JSON a backslash only
    starts an escape, so once the escaped backslashes and then the escaped quotes are gone, every
    quote left opens or closes a string; what is not JSON is refused by the parser after this anyway.
    """
    unescaped = payload.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Only quotes and brackets decide: a message of numbers and text keeps few of its bytes.
    text = np.frombuffer(unescaped.translate(None, _NEITHER_QUOTE_NOR_BRACKET), dtype=np.uint8)
    quotes = text == ord('"')
    # Odd when inside a string: a running count of quotes, mod 256 by its one-byte type, keeps its parity.
    inside = (np.cumsum(quotes, dtype=np.uint8) & 1).astype(bool)
    inside |= quotes
    brackets = text[~inside]
    depth = deepest = 0
    for start in range(0, len(brackets), _CHUNK):
        running = np.cumsum(_STEPS[brackets[start : start + _CHUNK]], dtype=np.int32) + depth
        deepest = max(deepest, int(running.max()))
        depth = int(running[-1])
    return deepest


class _CollectorPause:
    """Pauses the garbage collector while any thread parses; counted, so the last parse to finish resumes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parses = 0
        self._resume = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            self._parses += 1
            if self._parses == 1:
                self._resume = gc.isenabled()
                gc.disable()
        try:
            yield
        finally:
            with self._lock:
                self._parses -= 1
                if self._parses == 0 and self._resume:
                    gc.enable()


_collector_paused = _CollectorPause()


def _repaired(value: Any) -> Any:
    """Replaces lone surrogates (which no file or terminal takes) in every string and key."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            for position, child in enumerate(item):
                if isinstance(child, str):
                    item[position] = encodable(child)
                elif isinstance(child, (list, dict)):
                    stack.append(child)
        elif isinstance(item, dict):
            for key in list(item):
                child = item[key]
                if isinstance(key, str) and encodable(key) != key:
                    del item[key]
                    key = encodable(key)
                    item[key] = child
                if isinstance(child, str):
                    item[key] = encodable(child)
                elif isinstance(child, (list, dict)):
                    stack.append(child)
    return value


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
        # An event is recorded as JSON, which has no NaN or infinity: those become their text ('nan', 'inf').
        message["detail"] = finite_numbers(message["detail"])
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
