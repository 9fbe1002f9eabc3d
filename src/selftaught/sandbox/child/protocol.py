"""Wire format between the host and a sandboxed child: framed JSON messages in packets, standard library only.

Both sides import this module; it imports nothing of selftaught, so the child can load it
as a top-level module without ever seeing host code. Only builtin types cross the wire
(numpy arrays travel as tagged dicts), and errors cross as text.

A frame is an 8-byte header (the JSON's length, then the length of a binary tail) followed by
the JSON and the tail; only the host's `instances` message has a tail (the arrays as raw bytes). A child's channel is a SOCK_SEQPACKET socket: each packet the child sends carries
the kernel's time of sending to the host, so the host times the child without its cooperation.
A frame longer than one packet is split over several. The fork server's control channel is a
stream socket and uses the same frames.

A child's audit hook reports in packets of their own: a header whose tail length is
ALONE_TAIL, then an `event` message's JSON, the whole packet one message. The host takes such a
packet apart from the frames it is reassembling, so a report needs no lock and can never land in
the middle of another message: four bytes 0xFF never occur in a frame (its JSON is ASCII, its
lengths are under 2**31), wherever a packet of it begins.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
from typing import Any

HEADER = struct.Struct(">II")

#: Largest frame the host sends a child (the child trusts the host; this only bounds mistakes).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Largest message a child may send, and what a whole job may send; the host ends a child that sends more.
MAX_CHILD_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_CHILD_JOB_BYTES = 32 * 1024 * 1024
#: How often, at most, a child running instances sends the outputs so far (and at once when its last ends).
FLUSH_SECONDS = 0.1
#: Largest packet either side writes; a frame longer than this is split. Fits a socket's send buffer.
PACKET_BYTES = 64 * 1024

#: The tail length that marks a packet holding one whole event message by itself.
ALONE_TAIL = 0xFFFFFFFF
ALONE_MARK = ALONE_TAIL.to_bytes(4, "big")

#: Message kinds.
SETUP = "setup"  # host -> child: how to confine itself (limits, layers, identity, scratch), nothing of a job
JOB = "job"  # host -> child: what to run, sent once the child is confined (or may be)
CALL = "call"  # child -> host: a proxy method call (language model, utility, ...)
REPLY = "reply"  # host -> child: the answer to a CALL
EVENT = "event"  # child -> host: something the host should record (budget tampering, ...)
READY = "ready"  # child -> host: the solution is loaded; send the instances
INSTANCES = "instances"  # host -> child: the instances' arguments, with their arrays as a tail
OUTPUTS = "outputs"  # child -> host: the outputs of the instances run since the last such message
RESULT = "result"  # child -> host: the job's final value
FAILURE = "failure"  # child -> host: the job raised; text only

#: The exit code of a child its audit hook stopped: its reporter was tampered with, or it kept trying.
EXIT_STOPPED_BY_WATCH = 86
#: The exit code of a child past its CPU-time limit (the first process of a pid namespace ignores SIGXCPU).
EXIT_CPU_LIMIT = 87

#: The budget counters in the state the host reports with each reply: the proxies' attributes generated code
#: may read but not write (a write is reported as tampering), and what the static audit looks for.
BUDGET_ATTRIBUTES = frozenset({"budget", "uses", "max_responses_per_call", "times_used"})

#: Longest list or largest array an output may hold; bigger ones are refused before encoding costs time.
MAX_OUTPUT_ITEMS = 1_000_000

NDARRAY_TAG = "$ndarray"
UNREPRESENTABLE_TAG = "$unrepresentable"


class ProtocolError(Exception):
    """The peer broke the framing: closed early, sent too much, or sent something not JSON."""


class PeerClosed(ProtocolError):
    """The peer closed the channel."""


#: One encoder for every message: json.dumps with options builds a new one at each call.
_encode_json = json.JSONEncoder(allow_nan=True, separators=(",", ":")).encode


def frame(message: dict[str, Any], tail: bytes = b"", limit: int = MAX_MESSAGE_BYTES) -> bytes:
    payload = _encode_json(message).encode("utf-8")
    if len(payload) + len(tail) > limit:
        raise ProtocolError(f"message of {len(payload) + len(tail)} bytes exceeds the {limit}-byte cap")
    return HEADER.pack(len(payload), len(tail)) + payload + tail


def send_frames(sock: socket.socket, frames: bytes) -> None:
    """Writes frames already built: in packets on a packet socket, as one write on a stream."""
    if sock.type != socket.SOCK_SEQPACKET:
        sock.sendall(frames)
        return
    view = memoryview(frames)
    for start in range(0, len(view), PACKET_BYTES):
        sock.send(view[start : start + PACKET_BYTES])


def send_message(sock: socket.socket, message: dict[str, Any], tail: bytes = b"") -> None:
    send_frames(sock, frame(message, tail))


class FrameReader:
    """Reads whole frames from a socket, whatever the packets or stream writes that carried them.

    For the side that trusts its peer (a child reading the host, the fork server reading the
    host); the host reads children through its own, limited reader.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._packets = sock.type == socket.SOCK_SEQPACKET
        self._buffer = bytearray()

    def receive(self, wait: bool = True) -> tuple[dict[str, Any], bytes]:
        """The next message and its binary tail; without `wait`, BlockingIOError when it is not whole yet."""
        flags = 0 if wait else socket.MSG_DONTWAIT
        if not self._buffer and self._packets:
            # The usual case: one packet holds exactly one message.
            packet = self._read(flags)
            if len(packet) >= HEADER.size:
                json_size, tail_size = HEADER.unpack_from(packet)
                if HEADER.size + json_size + tail_size == len(packet):
                    return _parsed(packet[HEADER.size : HEADER.size + json_size]), packet[HEADER.size + json_size :]
            self._buffer += packet
        while len(self._buffer) < HEADER.size:
            self._buffer += self._read(flags)
        json_size, tail_size = HEADER.unpack_from(self._buffer)
        end = HEADER.size + json_size + tail_size
        if end - HEADER.size > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"message of {end - HEADER.size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte cap")
        while len(self._buffer) < end:
            self._buffer += self._read(flags, end - len(self._buffer))
        payload, tail = (
            bytes(self._buffer[HEADER.size : HEADER.size + json_size]),
            bytes(self._buffer[HEADER.size + json_size : end]),
        )
        del self._buffer[:end]
        return _parsed(payload), tail

    def _read(self, flags: int, wanted: int = HEADER.size) -> bytes:
        # A packet must be read whole (a short read of a packet loses the rest of it).
        chunk = self._sock.recv(PACKET_BYTES if self._packets else max(wanted, 1 << 16), flags)
        if not chunk:
            raise PeerClosed("the peer closed the channel")
        return chunk


def _parsed(payload: bytes) -> dict[str, Any]:
    try:
        message = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as error:
        raise ProtocolError(f"malformed message: {error}") from None
    if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
        raise ProtocolError("a message must be an object with a string 'kind'")
    return message


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    """`size` bytes from a stream socket, reading nothing beyond them (passed descriptors ride on the next bytes)."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            raise PeerClosed("the peer closed the channel")
        chunks.extend(chunk)
    return bytes(chunks)


def receive_body(sock: socket.socket, header: bytes) -> dict[str, Any]:
    """The rest of a message on a stream socket whose header (or its start) was already read."""
    header += receive_exactly(sock, HEADER.size - len(header))
    json_size, tail_size = HEADER.unpack(header)
    if tail_size or json_size > MAX_MESSAGE_BYTES:
        raise ProtocolError("unexpected message size on the control channel")
    try:
        message = json.loads(receive_exactly(sock, json_size).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ProtocolError(f"malformed message: {error}") from None
    if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
        raise ProtocolError("a message must be an object with a string 'kind'")
    return message


def receive_message(sock: socket.socket) -> dict[str, Any]:
    """One message from a stream socket, reading nothing beyond it."""
    return receive_body(sock, receive_exactly(sock, HEADER.size))


def encode_value(value: Any, depth: int = 0) -> Any:
    """Turns an algorithm's return value into JSON-safe data, never raising.

    numpy arrays and scalars are recognised by duck typing so this module needs no numpy.
    Anything else becomes an explicit 'unrepresentable' marker that the host scores as invalid.
    """
    if depth > 20:
        return {UNREPRESENTABLE_TAG: "nesting deeper than 20 levels"}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_OUTPUT_ITEMS:
            return {UNREPRESENTABLE_TAG: f"{type(value).__name__} of more than {MAX_OUTPUT_ITEMS} items"}
        return [encode_value(item, depth + 1) for item in value]
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return {key: encode_value(item, depth + 1) for key, item in value.items()}
        return {UNREPRESENTABLE_TAG: "dict with non-string keys"}
    type_name = f"{type(value).__module__}.{type(value).__qualname__}"
    if type_name == "numpy.ndarray":
        try:
            if value.size > MAX_OUTPUT_ITEMS:
                return {UNREPRESENTABLE_TAG: f"numpy.ndarray of more than {MAX_OUTPUT_ITEMS} items"}
            if value.dtype.kind not in "biuf":
                return {UNREPRESENTABLE_TAG: f"numpy.ndarray of dtype {value.dtype}"}
            # Raw bytes in base64: far cheaper than a list of numbers, both to encode and to decode.
            return {
                NDARRAY_TAG: {
                    "dtype": value.dtype.str,
                    "shape": list(value.shape),
                    "base64": base64.b64encode(value.tobytes()).decode("ascii"),
                }
            }
        except Exception as error:
            return {UNREPRESENTABLE_TAG: f"ndarray: {error}"}
    if type_name.startswith("numpy.") and hasattr(value, "item"):
        try:
            return encode_value(value.item(), depth + 1)
        except Exception:
            pass
    return {UNREPRESENTABLE_TAG: type_name}
