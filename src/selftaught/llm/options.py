"""What HTTP backends read from a spec's `?options` (`?concurrency=N&rps=N`), and the rate limit they impose.

Each backend accepts its own names (`ModelSpec.numbers`); an unknown name, a value that is not a
positive number, or a count (concurrency) that is not a whole number is refused with the names it
knows, so a typo never silently does nothing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from selftaught.errors import ModelUnavailable
from selftaught.llm.model_spec import ModelSpec

#: Requests an HTTP backend keeps in flight at once unless `?concurrency=` says otherwise.
MAX_CONCURRENT_REQUESTS = 8


@dataclass(frozen=True)
class HttpBackendSpec:
    """What `PREFIX:MODEL[@URL][?concurrency=N&rps=N]` says to an HTTP backend."""

    model: str
    base_url: str | None
    concurrency: int
    requests_per_second: float | None


def parse_http_spec(spec: ModelSpec, example: str) -> HttpBackendSpec:
    options = spec.numbers({"concurrency": MAX_CONCURRENT_REQUESTS, "rps": None}, counts={"concurrency"})
    if not spec.model:
        raise ModelUnavailable(f"{spec.text}: name a model, as in {example}")
    return HttpBackendSpec(spec.model, spec.base_url, int(options["concurrency"] or 1), options["rps"])


class RateLimiter:
    """At most `per_second` requests start per second, across all threads (None: no limit)."""

    def __init__(self, per_second: float | None) -> None:
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        time.sleep(max(0.0, start - now))
