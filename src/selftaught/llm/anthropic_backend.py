"""`anthropic:MODEL[@BASE_URL]` — Anthropic's messages API through the `anthropic` SDK; the key from ANTHROPIC_API_KEY.

The API returns one response per request, so n responses are n concurrent requests, each billed on its own.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from selftaught.errors import ModelUnavailable
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


class AnthropicBackend(Backend):
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
            import anthropic
        except ImportError:
            raise ModelUnavailable("the anthropic backend needs the anthropic package: pip install anthropic") from None
        key = os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise ModelUnavailable(f"{spec}: ANTHROPIC_API_KEY is not set; export it")
        self.spec = spec
        self._model = model
        self._anthropic = anthropic
        self.retry = retry
        self._client = anthropic.Anthropic(api_key=key, base_url=base_url, timeout=timeout_seconds, max_retries=0)
        self._server = str(self._client.base_url).rstrip("/")
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="anthropic")
        self._rate = RateLimiter(requests_per_second)
        #: Every request in flight holds one of its slots: `?concurrency=` bounds what the server sees.
        self._gate = AdaptiveConcurrency(concurrency)
        self.concurrency = concurrency

    def complete(self, request: CompletionRequest) -> Completion:
        arguments: dict[str, Any] = {
            "model": self._model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages if m.role != "system"],
            "extra_body": {"temperature": min(request.temperature, 1.0)},  # Anthropic's range is [0, 1]
        }
        if request.system:
            arguments["system"] = request.system
        requests = [lambda: self._answer(request, self.retry.call(lambda: self._create(arguments)))] * request.n
        return completion_of(gather(self._pool, requests), request.n)

    def _answer(self, request: CompletionRequest, response: Any) -> Answer:
        text = "".join(getattr(block, "text", "") for block in (getattr(response, "content", None) or []))
        usage = getattr(response, "usage", None)
        return billed_answer(
            request, (text,), getattr(usage, "input_tokens", None), getattr(usage, "output_tokens", None)
        )

    def _create(self, arguments: dict[str, Any]) -> Any:
        return self._gate.send(lambda: self._send(arguments))

    def _send(self, arguments: dict[str, Any]) -> Any:
        self._rate.wait()
        create = functools.partial(self._client.messages.create, **arguments)
        return call_sdk(
            self._anthropic,
            self._anthropic.AnthropicError,
            self.spec,
            lambda: reporting_unreachable(self._server, self.spec, create),
        )

    def throttling(self) -> Throttling:
        return self._gate.report()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


@register_backend(
    "anthropic",
    "Anthropic's Claude models; key from ANTHROPIC_API_KEY; options ?concurrency=N&rps=N",
    "anthropic:MODEL[@URL]",
    url_form="anthropic:MODEL@https://HOST[:PORT]",
)
def create_anthropic_backend(spec: ModelSpec) -> Backend:
    parsed = parse_http_spec(spec, "anthropic:claude-sonnet-4-5")
    return AnthropicBackend(
        spec.text,
        parsed.model,
        parsed.base_url,
        concurrency=parsed.concurrency,
        requests_per_second=parsed.requests_per_second,
    )
