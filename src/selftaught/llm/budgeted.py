"""The paper's language-model API with its call budget, as the host serves it to one improver run.

The budget lives here, in the host: nothing an improver does to its proxy object changes it.
Every backend request is reported to `on_call` (for the store) whether it succeeds or fails.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from selftaught.errors import BackendError, ModelUnavailable
from selftaught.llm.base import Backend, ChatMessage, Completion, CompletionRequest
from selftaught.llm.billing import kept_response
from selftaught.llm.pricing import CostMeter, PriceTable
from selftaught.llm.sdk_errors import short
from selftaught.store.rows import CallRow
from selftaught.text import encodable

BUDGET_EXCEEDED = "Error: You have exceeded your call budget."


#: Longest prompt text an improver may send (each message, and the expertise): a long model context, and
#: a bound on what one call can cost and add to the store.
MAX_PROMPT_CHARS = 200_000


def _check_length(text: str, what: str) -> None:
    if len(text) > MAX_PROMPT_CHARS:
        raise LanguageModelRefusal(f"the {what} has {len(text)} characters; at most {MAX_PROMPT_CHARS} per call")


class LanguageModelRefusal(Exception):
    """A call the improver may not make (budget, arguments) or that failed; the text goes to the improver."""


class BudgetedLanguageModel:
    """`batch_prompt` and `prompt` for one improver run: at most `budget` calls of at most `max_responses_per_call`."""

    def __init__(
        self,
        backend: Backend,
        *,
        budget: int,
        max_responses_per_call: int,
        max_tokens: int,
        next_seed: Callable[[], int],
        on_call: Callable[[CallRow], None],
        prices: PriceTable,
        meter: CostMeter,
    ) -> None:
        self._backend = backend
        self.budget = budget
        self.max_responses_per_call = max_responses_per_call
        self._max_tokens = max_tokens
        self._next_seed = next_seed
        self._on_call = on_call
        self._prices = prices
        self._meter = meter
        self.calls_used = 0
        self.responses_received = 0

    def state(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "max_responses_per_call": self.max_responses_per_call,
            "times_used": self.calls_used,
        }

    def batch_prompt(self, expertise: Any, messages: Any, temperature: Any = 0.7) -> list[str]:
        if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
            raise LanguageModelRefusal("batch_prompt takes a list of message strings")
        for message in messages:
            _check_length(message, "message")
        if not messages:
            return []
        if len(messages) > self.max_responses_per_call:
            raise LanguageModelRefusal(
                f"batch_prompt got {len(messages)} messages; at most {self.max_responses_per_call} per call"
            )
        self._charge(expertise, temperature)
        answers: dict[str, list[str]] = {}
        for message, count in Counter(messages).items():
            answers[message] = self._request(expertise, message, count, float(temperature))
        return [answers[message].pop(0) for message in messages]

    def prompt(self, expertise: Any, message: Any, n_responses: Any = 1, temperature: Any = 0.7) -> list[str]:
        if not isinstance(message, str):
            raise LanguageModelRefusal("prompt takes a message string")
        _check_length(message, "message")
        if not isinstance(n_responses, int) or isinstance(n_responses, bool) or n_responses < 1:
            raise LanguageModelRefusal("n_responses must be a positive integer")
        if n_responses > self.max_responses_per_call:
            raise LanguageModelRefusal(
                f"prompt asked for {n_responses} responses; at most {self.max_responses_per_call} per call"
            )
        self._charge(expertise, temperature)
        return self._request(expertise, message, n_responses, float(temperature))

    def _charge(self, expertise: Any, temperature: Any) -> None:
        if not isinstance(expertise, str):
            raise LanguageModelRefusal("expertise must be a string")
        _check_length(expertise, "expertise")
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
            raise LanguageModelRefusal("temperature must be a number between 0 and 2")
        if self.calls_used >= self.budget:
            raise LanguageModelRefusal(BUDGET_EXCEEDED)
        self.calls_used += 1

    def _request(self, expertise: str, message: str, n: int, temperature: float) -> list[str]:
        request = CompletionRequest(
            messages=(ChatMessage("system", expertise), ChatMessage("user", message)),
            n=n,
            temperature=temperature,
            max_tokens=self._max_tokens,
            seed=self._next_seed(),
        )
        started = time.monotonic()
        error: str | None = None
        texts: tuple[str, ...] = ()
        prompt_tokens = completion_tokens = 0
        cached = replayed = False
        cost: float | None = 0.0
        try:
            completion = self._backend.complete(request)
            texts, prompt_tokens, completion_tokens = (
                tuple(kept_response(text, self._max_tokens) for text in completion.texts[:n]),
                completion.prompt_tokens,
                completion.completion_tokens,
            )
            cached, replayed = completion.cached, completion.replayed
            cost = self._pay_for(completion)
            if len(texts) < n:
                error = f"{self._backend.spec}: asked for {n} responses, got {len(texts)}"
        except (BackendError, ModelUnavailable) as failure:
            error = encodable(str(failure))
            if isinstance(failure, BackendError) and (failure.prompt_tokens or failure.completion_tokens):
                # Requests of the call that were answered before another failed were paid for: they count.
                prompt_tokens, completion_tokens = failure.prompt_tokens, failure.completion_tokens
                cost = self._prices.cost(self._backend.spec, prompt_tokens, completion_tokens)
                self._meter.add(cost)
        except Exception as failure:  # a backend's own bug (a plugin's): an error of this call, recorded as one
            error = short(f"{self._backend.spec}: {type(failure).__name__}: {failure}")
        self.responses_received += len(texts)
        self._on_call(
            CallRow(
                backend=self._backend.spec,
                system=expertise,
                message=message,
                n=n,
                temperature=temperature,
                max_tokens=self._max_tokens,
                seed=request.seed,
                responses=texts,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                latency_seconds=time.monotonic() - started,
                error=error,
                cache_hit=cached,
                cost_usd=cost,
                replayed=replayed,
            )
        )
        if error is not None:
            raise LanguageModelRefusal(f"language model error: {error}")
        return list(texts)

    def _pay_for(self, completion: Completion) -> float | None:
        """What the completion cost, counted toward the run's limit (None: a model without a price)."""
        cost: float | None = 0.0  # paid for already (a resumed run's meter starts from what every attempt paid)
        if not completion.replayed and not completion.cached:
            cost = self._prices.cost(self._backend.spec, completion.prompt_tokens, completion.completion_tokens)
        self._meter.add(cost)
        return cost
