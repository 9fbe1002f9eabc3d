"""Retries of transient backend failures (429, 5xx, timeouts) with exponential backoff and jitter, via tenacity.

A backend raises `TransientBackendError` for what may succeed later, with the server's Retry-After
when it sent one; the wait before the next attempt is the longer of that and the backoff. What
still fails after the last attempt surfaces as a plain BackendError: a recorded error of the
improver run, never a crash of the whole run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential_jitter

from selftaught.errors import BackendError

Result = TypeVar("Result")


class TransientBackendError(BackendError):
    """A failure worth retrying; `retry_after` is the server's requested wait in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(TransientBackendError):
    """The server refused a request for being one too many (HTTP 429, or Anthropic's 529 "overloaded")."""


#: The statuses a server answers with when it is sent more than it will take at once.
PUSHBACK_STATUSES = frozenset({429, 529})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    #: Attempts of a request the server refused for being one too many: the backend sends fewer at once
    #: meanwhile, so pushback is waited out longer than a failure (minutes, at the longest waits).
    pushback_attempts: int = 12
    initial_wait_seconds: float = 1.0
    max_wait_seconds: float = 60.0

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
            retry=retry_if_exception_type(TransientBackendError),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except TransientBackendError as error:
            attempts = self.pushback_attempts if isinstance(error, RateLimited) else self.attempts
            raise BackendError(f"{error} (after {attempts} attempts)") from None


def retry_after_seconds(headers: object) -> float | None:
    """The Retry-After header in seconds, when it is a number."""
    value = getattr(headers, "get", lambda name: None)("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
