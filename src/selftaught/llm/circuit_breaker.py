"""The run's circuit breaker: a model that cannot answer stops the run instead of failing every call.

Without it, a server that goes away mid-run turns each later improver run into one more recorded
error, and the run "finishes" with nothing learnt. The breaker sits in front of the live backend
only (answers from the cache or the run's record never trip it) and trips on a `ModelOutage`: a
request still failing after every retry because no connection can be made, or an answer no request
changes (the key refused, no such model). A server error or a timeout on every attempt trips it
only when no other request got through while that one was tried: otherwise the server is up, and
it was that request.

What a request asks never trips it: a request refused for its content (too long, malformed) is an
error of that call, which the improver sees, however many there are. Generated code writes the
requests; it must not be able to stop the run. Failures that are the model's answer (bad code,
empty text) are not backend failures at all.

Once tripped, it fails every request at once, and the loop, seeing it tripped, stops the run.
"""

from __future__ import annotations

import threading
import time

from selftaught.errors import BackendError, ModelOutage
from selftaught.llm.base import Backend, Completion, CompletionRequest
from selftaught.llm.concurrency import Throttling


class CircuitBreaker:
    """Whether the run's model is out; thread-safe, as improver runs call the model from many threads."""

    def __init__(self) -> None:
        self._reason: str | None = None
        self._last_answer_at = float("-inf")
        self._lock = threading.Lock()

    @property
    def reason(self) -> str | None:
        """Why the breaker tripped; None while it has not."""
        return self._reason

    def check(self) -> None:
        """Raises the outage once the breaker has tripped."""
        if self._reason is not None:
            raise ModelOutage(self._reason)

    def answered(self) -> None:
        with self._lock:
            self._last_answer_at = time.monotonic()

    def out(self, outage: ModelOutage, asked_at: float) -> bool:
        """Trips on `outage` of a request sent at `asked_at`, unless it may be that request's own; True if tripped."""
        with self._lock:
            if not outage.certain and self._last_answer_at >= asked_at:
                return False
            if self._reason is None:
                self._reason = f"the language model is out: {outage}"
            return True


class BreakerBackend(Backend):
    """Passes requests to `backend` while the breaker holds; tells the breaker how each one went."""

    def __init__(self, backend: Backend, breaker: CircuitBreaker) -> None:
        self.spec = backend.spec
        self.concurrency = backend.concurrency
        self._backend = backend
        self._breaker = breaker

    def complete(self, request: CompletionRequest) -> Completion:
        self._breaker.check()
        asked_at = time.monotonic()
        try:
            completion = self._backend.complete(request)
        except ModelOutage as outage:
            if self._breaker.out(outage, asked_at):
                raise
            raise BackendError(str(outage), outage.prompt_tokens, outage.completion_tokens) from None
        self._breaker.answered()
        return completion

    def throttling(self) -> Throttling:
        return self._backend.throttling()

    def close(self) -> None:
        self._backend.close()
