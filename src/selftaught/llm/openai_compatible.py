"""`openai:MODEL[@BASE_URL]` — OpenAI and any server speaking its chat-completions API (vLLM, Ollama, llama.cpp server).

The key comes from OPENAI_API_KEY and stays in the host; a server given by URL may need none.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from selftaught.errors import BackendError, ModelUnavailable
from selftaught.llm.base import Backend, Completion, CompletionRequest
from selftaught.llm.billing import Answer, billed_answer, completion_of, gather
from selftaught.llm.concurrency import AdaptiveConcurrency, Throttling
from selftaught.llm.model_spec import ModelSpec
from selftaught.llm.options import MAX_CONCURRENT_REQUESTS, RateLimiter, parse_http_spec
from selftaught.llm.registry import register_backend
from selftaught.llm.retry import RetryPolicy, reporting_unreachable
from selftaught.llm.sdk_errors import call_sdk

REQUEST_TIMEOUT_SECONDS = 600.0
DEFAULT_RETRY = RetryPolicy()
#: Placeholder key for local servers that ignore authentication.
NO_KEY = "not-needed"


class OpenAICompatibleBackend(Backend):
    """Retries 429, 5xx, timeouts and dropped connections itself (the SDK's own retries are off)."""

    def __init__(
        self,
        spec: str,
        model: str,
        base_url: str | None,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout_seconds: float = REQUEST_TIMEOUT_SECONDS,
        concurrency: int = MAX_CONCURRENT_REQUESTS,
        requests_per_second: float | None = None,
    ) -> None:
        try:
            import openai
        except ImportError:
            raise ModelUnavailable("the openai backend needs the openai package: pip install openai") from None
        key = os.environ.get("OPENAI_API_KEY")
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not key and not base_url:
            raise ModelUnavailable(
                f"{spec}: OPENAI_API_KEY is not set; export it, or give a local server as openai:MODEL@http://HOST:PORT/v1"
            )
        self.spec = spec
        self._model = model
        self._openai = openai
        self.retry = retry
        self._client = openai.OpenAI(api_key=key or NO_KEY, base_url=base_url, timeout=timeout_seconds, max_retries=0)
        self._server = str(self._client.base_url).rstrip("/")
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="openai")
        self._rate = RateLimiter(requests_per_second)
        #: Every request in flight holds one of its slots: `?concurrency=` bounds what the server sees.
        self._gate = AdaptiveConcurrency(concurrency)
        self.concurrency = concurrency
        self._server_ignores_n = False

    def complete(self, request: CompletionRequest) -> Completion:
        if self._server_ignores_n:
            return completion_of(gather(self._pool, self._single_requests(request, range(request.n))), request.n)
        answers = [self._answer(request, self._create(request, request.n, 0))]
        missing = request.n - len(answers[0].texts)
        if missing > 0:
            # The server ignored `n` (many local servers do): the rest now, and everything from now on,
            # as concurrent single requests.
            self._server_ignores_n = True
            offsets = range(request.n - missing, request.n)
            answers += gather(self._pool, self._single_requests(request, offsets), earlier=answers)
        return completion_of(answers, request.n)

    def _single_requests(self, request: CompletionRequest, offsets: range) -> list[Callable[[], Answer]]:
        return [functools.partial(self._single_answer, request, offset) for offset in offsets]

    def _single_answer(self, request: CompletionRequest, offset: int) -> Answer:
        return self._answer(request, self._create(request, 1, offset))

    def _answer(self, request: CompletionRequest, response: Any) -> Answer:
        """The response's texts and tokens; one without choices fails, carrying the tokens it was billed for."""
        texts = tuple(_content(choice) for choice in getattr(response, "choices", None) or [])
        usage = getattr(response, "usage", None)
        answer = billed_answer(
            request, texts, getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
        )
        if not texts:
            raise BackendError(
                f"{self.spec}: the server returned no choices", answer.prompt_tokens, answer.completion_tokens
            )
        return answer

    def _create(self, request: CompletionRequest, n: int, offset: int) -> Any:
        arguments: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "n": n,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            arguments["seed"] = request.seed + offset
        return self.retry.call(lambda: self._create_once(arguments))

    def _create_once(self, arguments: dict[str, Any]) -> Any:
        return self._gate.send(lambda: self._send(arguments))

    def _send(self, arguments: dict[str, Any]) -> Any:
        self._rate.wait()
        create = functools.partial(self._client.chat.completions.create, **arguments)
        return call_sdk(
            self._openai,
            self._openai.OpenAIError,
            self.spec,
            lambda: reporting_unreachable(self._server, self.spec, create),
        )

    def throttling(self) -> Throttling:
        return self._gate.report()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def _content(choice: Any) -> str:
    message = getattr(choice, "message", None)
    content = getattr(message, "content", None)
    return content if isinstance(content, str) else ""


@register_backend(
    "openai",
    "OpenAI, or any OpenAI-compatible server given by URL; key from OPENAI_API_KEY; options ?concurrency=N&rps=N",
    "openai:MODEL[@http://HOST:PORT/v1]",
    url_form="openai:MODEL@http://HOST:PORT/v1",
)
def create_openai_backend(spec: ModelSpec) -> Backend:
    parsed = parse_http_spec(spec, "openai:gpt-4o")
    return OpenAICompatibleBackend(
        spec.text,
        parsed.model,
        parsed.base_url,
        retry=DEFAULT_RETRY,  # looked up now, not when the class was defined: tests shorten the waits
        concurrency=parsed.concurrency,
        requests_per_second=parsed.requests_per_second,
    )
