"""Retries of transient backend failures (429, 5xx, timeouts) with exponential backoff and jitter, via tenacity.

A backend raises `TransientBackendError` for what may succeed later, with the server's Retry-After
when it sent one; the wait before the next attempt is the longer of that and the backoff. What
still fails after the last attempt surfaces as a plain BackendError: a recorded error of the
improver run, never a crash of the whole run. A request that stays transient after every attempt
(a server down, a network gone) is a `ModelOutage`: the run's circuit breaker stops the run.

A server no connection can be made to (refused, unknown host) is `Unreachable`: a run retries it
like any transient failure, as the server may be restarting, while `models --check`, whose policy
does not retry it, says so at once.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

from selftaught.errors import BackendError, ModelOutage

Result = TypeVar("Result")


class TransientBackendError(BackendError):
    """A failure worth retrying; `retry_after` is the server's requested wait in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(TransientBackendError):
    """The server refused a request for being one too many (HTTP 429, or Anthropic's 529 "overloaded")."""


class TimedOut(TransientBackendError):
    """The server did not answer in time."""


class Unreachable(TransientBackendError):
    """No connection could be made to the server: it refused it, or its host is unknown or unreachable."""


#: The statuses a server answers with when it is sent more than it will take at once.
PUSHBACK_STATUSES = frozenset({429, 529})
#: What the operating system says when no connection can be made: nothing listens, no route to the host.
UNREACHABLE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    #: Attempts of a request the server refused for being one too many: the backend sends fewer at once
    #: meanwhile, so pushback is waited out longer than a failure (minutes, at the longest waits).
    pushback_attempts: int = 12
    initial_wait_seconds: float = 1.0
    max_wait_seconds: float = 60.0
    #: False for a check that must answer at once: a refused connection will not be accepted a second later.
    retries_unreachable: bool = True

    def call(self, attempt: Callable[[], Result]) -> Result:
        initial = self.initial_wait_seconds
        backoff = wait_exponential_jitter(multiplier=initial, jitter=initial, max=self.max_wait_seconds)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            requested = getattr(error, "retry_after", None) or 0.0
            return min(max(float(requested), backoff(state)), self.max_wait_seconds)

        def stop(state: RetryCallState) -> bool:
            error = state.outcome.exception() if state.outcome is not None else None
            limit = self.pushback_attempts if isinstance(error, RateLimited) else self.attempts
            return state.attempt_number >= limit

        retrying = Retrying(
            stop=stop,
            wait=wait,
            retry=retry_if_exception(self.retries),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except TransientBackendError as error:
            if not self.retries(error):
                raise ModelOutage(str(error)) from None
            attempts = self.pushback_attempts if isinstance(error, RateLimited) else self.attempts
            # No connection at all says nothing about the request; a server error or a timeout might.
            certain = isinstance(error, Unreachable)
            busy = isinstance(error, (TimedOut, RateLimited))
            raise ModelOutage(f"{error} (after {attempts} attempts)", certain, busy=busy) from None

    def retries(self, error: BaseException) -> bool:
        """Whether `error` is worth another attempt."""
        if isinstance(error, Unreachable):
            return self.retries_unreachable
        return isinstance(error, TransientBackendError)


@runtime_checkable
class RetriesRequests(Protocol):
    """A backend that retries failed requests by its `retry` policy, which a caller may replace."""

    retry: RetryPolicy


def reporting_unreachable(server: str, spec: str, request: Callable[[], Result]) -> Result:
    """`request()`, raising Unreachable when no connection could be made to `server`, whatever the client library
    wraps that failure in: its own 'Connection error.' says neither where nor why."""
    try:
        return request()
    except Exception as error:
        reason = connection_failure(error)
        if reason is None:
            raise
        raise Unreachable(f"{spec}: cannot reach the server at {without_credentials(server)}: {reason}") from None


def connection_failure(error: BaseException) -> str | None:
    """Why no connection could be made, from the operating system's error among the causes of `error`, as in
    'connection refused'; None when there is none (a connection made and then dropped, a timeout)."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, socket.gaierror):
            return f"unknown host ({cause.strerror})"
        if isinstance(cause, OSError) and cause.errno in UNREACHABLE_ERRNOS:
            return os.strerror(cause.errno).lower()  # 'connection refused', to follow a colon
        cause = cause.__cause__ or cause.__context__
    return None


def without_credentials(url: str) -> str:
    """The URL without a `user:password@` (a base URL from the environment may carry one)."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def retry_after_seconds(headers: object) -> float | None:
    """The Retry-After header in seconds, when it is a number."""
    value = getattr(headers, "get", lambda name: None)("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
