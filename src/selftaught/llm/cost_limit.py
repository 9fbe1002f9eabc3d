"""The run's cost limit, applied where money is spent: in front of the live backend only.

Answers from the response cache or from the run's own record were paid for already, so the limit
never refuses them: a run resumed after crossing its limit replays what it paid for and ends as
it would have without the interruption.
"""

from __future__ import annotations

from selftaught.errors import BackendError
from selftaught.llm.base import Backend, Completion, CompletionRequest, WrappingBackend
from selftaught.llm.pricing import CostMeter


class CostLimitedBackend(WrappingBackend):
    """Refuses every live request once the run's spending has reached its limit."""

    def __init__(self, backend: Backend, meter: CostMeter) -> None:
        super().__init__(backend)
        self._meter = meter

    def complete(self, request: CompletionRequest) -> Completion:
        if self._meter.exhausted:
            raise BackendError(f"the run's cost limit of ${self._meter.limit_usd:g} is reached")
        return self._backend.complete(request)
