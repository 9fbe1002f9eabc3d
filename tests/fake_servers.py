"""A local model server on 127.0.0.1 for tests, speaking the OpenAI chat-completions and the Anthropic messages APIs.

Canned answers, latency and faults on demand.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = (
    "ok",
    "429",
    "503",
    "500",
    "400",
    "malformed_json",
    "invalid_utf8",
    "no_choices",
    "hang",
    "drip",
    "drip_headers",
    "no_usage",
    "negative_usage",
)
#: Faults that serve the normal answer with its usage changed: left out, or a negative prompt count.
USAGE_FAULTS = ("no_usage", "negative_usage")


@dataclass
class FakeServer:
    """`answer(request) -> list of texts`; `status` other than 200 makes every request fail with it.

    `faults` are served first, one per request, in order: the normal answer (`ok`, to place a fault
    later), an HTTP 429 with Retry-After, a 503 or 500, a 400 (never retried), a body that is not
    JSON, invalid UTF-8, a completion without choices (its prompt billed), no answer at all, an answer
    whose body (`drip`) or headers (`drip_headers`) come one byte every `drip_seconds` for `hang_seconds`,
    or the normal answer without usage or with a negative prompt count.

    `body_for`, when given, makes the whole JSON body of every 200 answer instead (odd shapes).
    """

    answer: Callable[[dict[str, Any]], list[str]]
    status: int = 200
    faults: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    base_url: str = ""
    hang_seconds: float = 5.0
    drip_seconds: float = 0.1
    body_for: Callable[[dict[str, Any]], Any] | None = None
    #: Latency of every answer.
    delay_seconds: float = 0.0
    #: The error message of an answer with `status`.
    error_message: str = "simulated failure"
    #: The prompt tokens every chat-completions answer reports (a server may report anything).
    prompt_tokens: int = 11
    #: The status of each request by its body, when it is not `status` for all (a provider's moderation: 403).
    status_for: Callable[[dict[str, Any]], int] | None = None
    #: Requests it serves at once; one more is refused with `pushback` (429, or Anthropic's 529 "overloaded").
    at_once: int | None = None
    pushback: int = 429
    #: Requests in flight now, and the most there ever were.
    in_flight: int = 0
    most_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: Callable[[], None] | None = None

    def stop(self) -> None:
        """Goes away as a crashed server does: connections are refused from now on (answers in flight finish)."""
        if self._stop is not None:
            threading.Thread(target=self._stop, daemon=True).start()

    @contextmanager
    def counted(self) -> Iterator[bool]:
        """Counts one request in flight; yields whether the server takes it (False: one too many)."""
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            taken = self.at_once is None or self.in_flight <= self.at_once
        try:
            yield taken
        finally:
            with self._lock:
                self.in_flight -= 1


def _usage(fault: str, usage: dict[str, int]) -> dict[str, Any]:
    """The answer's usage field as the fault has it: as given, left out, or with a negative first count."""
    if fault == "no_usage":
        return {}
    if fault == "negative_usage":
        first = next(iter(usage))
        return {"usage": {**usage, first: -(10**9)}}
    return {"usage": usage}


@contextmanager
def fake_server(fake: FakeServer, port: int = 0) -> Iterator[FakeServer]:
    """Serves `fake` on 127.0.0.1:`port` (any free port by default; give one to restart a stopped server)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with fake.counted() as taken:
                if not taken:
                    time.sleep(0.01)  # as long as a server takes to say so: others stay in flight meanwhile
                    self._send(fake.pushback, {"error": {"message": "too many requests at once"}}, {"Retry-After": "0"})
                    return
                self._answer(body)

        def _answer(self, body: dict[str, Any]) -> None:
            fake.requests.append(body)
            fake.headers.append({key.lower(): value for key, value in self.headers.items()})
            status = fake.status if fake.status_for is None else fake.status_for(body)
            if self.path not in ("/v1/chat/completions", "/v1/messages") or status != 200:
                self._send(status if status != 200 else 404, {"error": {"message": fake.error_message}})
                return
            fault = fake.faults.pop(0) if fake.faults else "ok"
            if fault != "ok" and fault not in USAGE_FAULTS:
                self._fault(fault)
                return
            time.sleep(fake.delay_seconds)
            if fake.body_for is not None:
                self._send_raw(json.dumps(fake.body_for(body)).encode())
                return
            if self.path == "/v1/messages":
                self._send(
                    200,
                    {
                        "id": "msg_test",
                        "type": "message",
                        "role": "assistant",
                        "model": body["model"],
                        "content": [{"type": "text", "text": fake.answer({**body, "n": 1})[0]}],
                        "stop_reason": "end_turn",
                        "stop_sequence": None,
                        **_usage(fault, {"input_tokens": 11, "output_tokens": 7}),
                    },
                )
                return
            texts = fake.answer(body)
            self._send(
                200,
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                        for i, t in enumerate(texts)
                    ],
                    **_usage(
                        fault,
                        {
                            "prompt_tokens": fake.prompt_tokens,
                            "completion_tokens": 7 * len(texts),
                            "total_tokens": fake.prompt_tokens + 7 * len(texts),
                        },
                    ),
                },
            )

        def _fault(self, fault: str) -> None:
            if fault in ("429", "503", "500", "400"):
                self._send(int(fault), {"error": {"message": f"simulated {fault}"}}, {"Retry-After": "0.2"})
            elif fault == "malformed_json":
                self._send_raw(b'{"choices": [ this is not json')
            elif fault == "invalid_utf8":
                self._send_raw(b'{"choices": [{"message": {"content": "\xff\xfe"}}]}')
            elif fault == "no_choices":
                usage = {"prompt_tokens": 11, "completion_tokens": 0, "total_tokens": 11}
                self._send(
                    200,
                    {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [], "usage": usage},
                )
            elif fault == "hang":
                time.sleep(fake.hang_seconds)
            elif fault == "drip":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self._drip(b"1\r\n \r\n")  # chunks of one space: whitespace a JSON body may begin with
            elif fault == "drip_headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                self._drip(b"X-Drip: 1\r\n")

        def _drip(self, piece: bytes) -> None:
            ends = time.monotonic() + fake.hang_seconds
            try:
                while time.monotonic() < ends:
                    self.wfile.write(piece)
                    self.wfile.flush()
                    time.sleep(fake.drip_seconds)
            except OSError:  # the client gave up on it
                pass
            self.close_connection = True

        def _send_raw(self, data: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stopped = threading.Lock()

    def stop() -> None:
        if stopped.acquire(blocking=False):
            server.shutdown()
            server.server_close()

    fake._stop = stop
    try:
        yield fake
    finally:
        stop()
