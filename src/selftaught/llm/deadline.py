"""A whole request's deadline for the HTTP SDKs' clients: no server holds a request longer, whatever it sends.

httpx (and httpx2, which newer SDKs use) bounds each connect, read and write, never a request: a
server sending one byte a second keeps a request alive forever, and neither SDK has a total timeout.
The client made here is the SDK's own default one with its connection pools' network backend
wrapped: every operation of a request waits at most until the deadline its thread set (`deadline`),
and one begun past it fails as a timeout of the SDK (httpcore's ReadTimeout, WriteTimeout or
ConnectTimeout), which the backends read as a server that did not answer in time.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType
from typing import Any

logger = logging.getLogger("selftaught")

#: When the request in progress on this thread must be over (time.monotonic()); None: no deadline.
_DEADLINE: ContextVar[float | None] = ContextVar("selftaught_request_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Meanwhile, the requests of this thread end `seconds` from now at the latest (the SDK's call is synchronous:
    its network operations run on the thread that made it)."""
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def bounded_http_client(sdk: ModuleType) -> Any:
    """The SDK's default HTTP client (its limits and redirects, proxies from the environment), its every request
    bounded by the `deadline` of the thread that makes it."""
    client = sdk.DefaultHttpxClient()
    # Private attributes of httpx and httpcore, the one place a network backend can be given: a test
    # (tests/test_backend_conformance.py, a dripping server) fails when a new version moves them.
    transports = [client._transport, *(mounted for mounted in client._mounts.values() if mounted is not None)]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if pool is None or backend is None:
            logger.warning(
                f"{sdk.__name__}: this version of its HTTP client cannot be given a deadline; a server that answers "
                "slowly enough can hold a request for as long as it likes"
            )
            continue
        pool._network_backend = _BoundedBackend(backend, sys.modules[type(pool).__module__.partition(".")[0]])
    return client


def _bounded(timeout: float | None, past: Callable[[str], Exception]) -> float | None:
    """`timeout` shortened to what is left before the thread's deadline; raises `past` when nothing is."""
    ends = _DEADLINE.get()
    if ends is None:
        return timeout
    left = ends - time.monotonic()
    if left <= 0:
        raise past("the request's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _BoundedBackend:
    """An httpcore network backend whose connections and streams keep to the thread's deadline."""

    def __init__(self, backend: Any, httpcore: ModuleType) -> None:
        self._backend = backend
        self._httpcore = httpcore

    def connect_tcp(self, *args: Any, timeout: float | None = None, **kwargs: Any) -> _BoundedStream:
        bounded = _bounded(timeout, self._httpcore.ConnectTimeout)
        return _BoundedStream(self._backend.connect_tcp(*args, timeout=bounded, **kwargs), self._httpcore)

    def connect_unix_socket(self, *args: Any, timeout: float | None = None, **kwargs: Any) -> _BoundedStream:
        bounded = _bounded(timeout, self._httpcore.ConnectTimeout)
        return _BoundedStream(self._backend.connect_unix_socket(*args, timeout=bounded, **kwargs), self._httpcore)

    def __getattr__(self, name: str) -> Any:  # sleep, and whatever a later httpcore adds
        return getattr(self._backend, name)


class _BoundedStream:
    """An httpcore network stream whose reads and writes keep to the thread's deadline."""

    def __init__(self, stream: Any, httpcore: ModuleType) -> None:
        self._stream = stream
        self._httpcore = httpcore

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data: bytes = self._stream.read(max_bytes, _bounded(timeout, self._httpcore.ReadTimeout))
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout, self._httpcore.WriteTimeout))

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        bounded = _bounded(timeout, self._httpcore.ConnectTimeout)
        return _BoundedStream(self._stream.start_tls(ssl_context, server_hostname, bounded), self._httpcore)

    def __getattr__(self, name: str) -> Any:  # close, get_extra_info
        return getattr(self._stream, name)
