"""How many requests a backend keeps in flight: at most `?concurrency=`, fewer while the server says it is busy.

Every HTTP request a backend sends (each attempt, each of the single requests it splits `n` into)
holds a slot while it is in flight, so `?concurrency=N` bounds what the server sees. On a 429 (rate
limited) or a 529 (overloaded) the limit halves, and it grows back by one after N successes in a row,
never above N (additive increase, multiplicative decrease, as TCP does), while the refused requests
wait and try again (retry.py gives pushback more attempts than failures): a server that allows
fewer requests at once than asked is found out instead of failing calls.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from selftaught.llm.retry import RateLimited

Result = TypeVar("Result")
#: Improver runs at once for a model computed on this machine, or answered from a record: one per core.
LOCAL_CONCURRENCY = os.cpu_count() or 1


@dataclass(frozen=True)
class Throttling:
    """What a backend's server made of its requests: how often it pushed back, and the most sent at once."""

    throttled_requests: int = 0
    most_in_flight: int = 0
    #: The limit now (lower than the ceiling after pushback it has not grown back from yet).
    limit: int = 0


class AdaptiveConcurrency:
    """Slots for requests in flight, between 1 and `ceiling`. Thread-safe."""

    def __init__(self, ceiling: int) -> None:
        if ceiling < 1:
            raise ValueError("a backend needs room for at least one request at once")
        self.ceiling = ceiling
        self._limit = ceiling
        self._in_flight = 0
        self._most_in_flight = 0
        self._successes = 0
        self._throttled = 0
        self._changed = threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Held while one request is in flight; waits for a free slot first."""
        with self._changed:
            self._changed.wait_for(lambda: self._in_flight < self._limit)
            self._in_flight += 1
            self._most_in_flight = max(self._most_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._changed:
                self._in_flight -= 1
                self._changed.notify_all()

    def throttled(self) -> None:
        """The server refused a request for being too many: halve the limit."""
        with self._changed:
            self._throttled += 1
            self._limit = max(1, self._limit // 2)
            self._successes = 0

    def succeeded(self) -> None:
        with self._changed:
            self._successes += 1
            # Grown back slowly: requests that waited out a pushback come back together, and find room.
            if self._successes >= self.ceiling and self._limit < self.ceiling:
                self._limit += 1
                self._successes = 0
                self._changed.notify_all()

    def send(self, request: Callable[[], Result]) -> Result:
        """Sends one request in a slot; a refusal for being too many lowers the limit, a success may raise it."""
        with self.slot():
            try:
                result = request()
            except RateLimited:
                self.throttled()
                raise
        self.succeeded()
        return result

    def report(self) -> Throttling:
        with self._changed:
            return Throttling(self._throttled, self._most_in_flight, self._limit)
