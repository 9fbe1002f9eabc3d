"""The run's circuit breaker: a model that cannot answer stops the run instead of failing every call.

Without it, a server that goes away mid-run turns each later improver run into one more recorded
error, and the run "finishes" with nothing learnt. The breaker sits in front of the live backend
only (answers from the cache or the run's record never trip it) and trips on a `ModelOutage`:

- at once when the outage cannot be about the request: no connection could be made after every
  retry, or the server refused the key (401);
- otherwise (a server error or a timeout on every attempt, a 403 or a 404, which a provider may
  answer to one request's content) only when the server does not answer a request of the host's
  own either, `PROBE`, the same whatever generated code asks, and nothing else got through since
  the failed request was sent. A probe that times out or is pushed back (429) confirms nothing: on a
  server that serves one request at a time, generated code can keep it busy with slow requests.

Generated code writes the requests: what one asks must not stop the run, or every resume would
stop again where it did. So a request refused for its content is an error of that call, which the
improver sees, however often it happens. Failures that are the model's answer (bad code, empty
text) are not backend failures at all. Once tripped, the breaker fails every request at once, and
the loop, seeing it tripped, stops the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from selftaught.errors import BackendError, ModelOutage
from selftaught.llm.base import Backend, ChatMessage, Completion, CompletionRequest, WrappingBackend

#: The host's own request, sent when a failure may be the request's: answered, it shows the server is up.
PROBE = CompletionRequest(messages=(ChatMessage("user", "Reply with OK."),), n=1, temperature=0.0, max_tokens=4)


class CircuitBreaker:
    """Whether the run's model is out; thread-safe, as improver runs call the model from many threads.

    `charge` is given every answer to a probe: it is paid for like any call, and counts toward the
    run's cost limit.
    """

    def __init__(self, charge: Callable[[Completion], None] = lambda completion: None) -> None:
        self._charge = charge
        self._reason: str | None = None
        self._last_answer_at = float("-inf")
        self._lock = threading.Lock()
        #: One probe at a time: the failures of requests in flight together are confirmed by one answer.
        self._probing = threading.Lock()

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

    def out(self, outage: ModelOutage, asked_at: float, probe: Callable[[], Completion]) -> bool:
        """Whether `outage`, met by a request sent at `asked_at`, means the model is out; trips the breaker if so."""
        if outage.certain:
            return self._trip(str(outage))
        with self._probing:
            if self._reason is not None:
                return True
            if self._last_answer_at >= asked_at:  # something got through meanwhile: the server is up
                return False
            try:
                self._charge(probe())
            except ModelOutage as confirmed:
                if confirmed.busy:  # queued behind slow requests (generated code can send those): not out
                    return False
                return self._trip(f"{outage}; and the host's own request: {confirmed}")
            except BackendError:
                return False  # it answers, if not as asked: the server is there
            self.answered()
            return False

    def _trip(self, why: str) -> bool:
        with self._lock:
            if self._reason is None:
                self._reason = f"the language model is out: {why}"
        return True


class BreakerBackend(WrappingBackend):
    """Passes requests to `backend` while the breaker holds; tells the breaker how each one went."""

    def __init__(self, backend: Backend, breaker: CircuitBreaker) -> None:
        super().__init__(backend)
        self._breaker = breaker

    def complete(self, request: CompletionRequest) -> Completion:
        self._breaker.check()
        asked_at = time.monotonic()
        try:
            completion = self._backend.complete(request)
        except ModelOutage as outage:
            if self._breaker.out(outage, asked_at, lambda: self._backend.complete(PROBE)):
                raise
            raise BackendError(str(outage), outage.prompt_tokens, outage.completion_tokens) from None
        self._breaker.answered()
        return completion
