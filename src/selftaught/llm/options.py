"""Options given in a model spec after `?`, as in `llamacpp:smollm2?threads=4&context=4096`.

Each backend accepts its own names; an unknown name or a value that is not a positive number is
refused with the names it knows, so a typo never silently does nothing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from selftaught.errors import ModelUnavailable


def split_options(spec: str, argument: str, known: dict[str, float | None]) -> tuple[str, dict[str, float | None]]:
    """The argument without its options, and the options over the defaults in `known` (None: not set)."""
    base, _, query = argument.partition("?")
    options = dict(known)
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in known:
            raise ModelUnavailable(f"{spec}: unknown option {name!r}; this backend knows {', '.join(sorted(known))}")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if number <= 0:
            raise ModelUnavailable(f"{spec}: option {name} needs a positive number, not {value!r}")
        options[name] = number
    return base, options


#: Requests an HTTP backend keeps in flight at once unless `?concurrency=` says otherwise.
MAX_CONCURRENT_REQUESTS = 8


@dataclass(frozen=True)
class HttpBackendSpec:
    """What `PREFIX:MODEL[@URL][?concurrency=N&rps=N]` says to an HTTP backend."""

    model: str
    base_url: str | None
    concurrency: int
    requests_per_second: float | None


def parse_http_spec(spec: str, argument: str, example: str) -> HttpBackendSpec:
    name, options = split_options(spec, argument, {"concurrency": MAX_CONCURRENT_REQUESTS, "rps": None})
    model, _, base_url = name.partition("@")
    if not model:
        raise ModelUnavailable(f"{spec}: name a model, as in {example}")
    return HttpBackendSpec(model, base_url or None, int(options["concurrency"] or 1), options["rps"])


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
