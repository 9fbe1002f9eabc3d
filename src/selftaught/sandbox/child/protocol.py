"""Wire format between the host and a sandboxed child: framed JSON messages, standard library only.

Both sides import this module; it imports nothing of selftaught, so the child can load it
as a top-level module without ever seeing host code. Only builtin types cross the wire
(numpy arrays travel as tagged dicts), and errors cross as text.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
from typing import Any

HEADER = struct.Struct(">I")

#: Largest message either side accepts; a child sending more is killed and reported.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

#: Message kinds.
JOB = "job"  # host -> child: what to run
CALL = "call"  # child -> host: a proxy method call (language model, utility, ...)
REPLY = "reply"  # host -> child: the answer to a CALL
EVENT = "event"  # child -> host: something the host should record (budget tampering, ...)
INSTANCES = "instances"  # child -> host: algorithm outputs for task instances, in order
RESULT = "result"  # child -> host: the job's final value
FAILURE = "failure"  # child -> host: the job raised; text only

#: Longest list or largest array an output may hold; bigger ones are refused before encoding costs time.
MAX_OUTPUT_ITEMS = 1_000_000

NDARRAY_TAG = "$ndarray"
UNREPRESENTABLE_TAG = "$unrepresentable"


class ProtocolError(Exception):
    """The peer broke the framing: closed early, sent too much, or sent something not JSON."""


class PeerClosed(ProtocolError):
    """The peer closed the channel."""


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(frame(message))


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            raise PeerClosed("the peer closed the channel")
        chunks.extend(chunk)
    return bytes(chunks)


def receive_message(sock: socket.socket) -> dict[str, Any]:
    return receive_body(sock, receive_exactly(sock, HEADER.size))


def receive_body(sock: socket.socket, header: bytes) -> dict[str, Any]:
    """The message whose header was already read (the fork server reads headers with passed descriptors)."""
    header += receive_exactly(sock, HEADER.size - len(header))
    (size,) = HEADER.unpack(header)
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte cap")
    try:
        message = json.loads(receive_exactly(sock, size).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"malformed message: {error}") from None
    if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
        raise ProtocolError("a message must be an object with a string 'kind'")
    return message


class RawJSON(bytes):
    """A value already encoded as JSON (a cached list of task instances, say), spliced into a message as is."""


def frame(message: dict[str, Any]) -> bytes:
    raw = {key: value for key, value in message.items() if isinstance(value, RawJSON)}
    rest = {key: value for key, value in message.items() if key not in raw}
    payload = json.dumps(rest, allow_nan=True, separators=(",", ":")).encode("utf-8")
    for key, value in raw.items():
        payload = payload[:-1] + b"," + json.dumps(key).encode("utf-8") + b":" + value + b"}"
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte cap")
    return HEADER.pack(len(payload)) + payload


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
