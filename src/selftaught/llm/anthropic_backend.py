"""`anthropic:MODEL[@BASE_URL]` — Anthropic's messages API through the `anthropic` SDK; the key from ANTHROPIC_API_KEY.

The API returns one response per request, so n responses are n concurrent requests, each billed on its own.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from selftaught.errors import ModelUnavailable
from selftaught.llm.base import Backend, BackendInfo, Completion, CompletionRequest
from selftaught.llm.billing import Answer, billed_answer, completion_of, gather
from selftaught.llm.http_backend import HttpBackend, listed
from selftaught.llm.model_spec import ModelSpec


class AnthropicBackend(HttpBackend):
    prefix = "anthropic"
    sdk_package = "anthropic"
    sdk_error = "AnthropicError"
    # The SDK reads both when it is given no base_url (none in the spec) and ANTHROPIC_CUSTOM_HEADERS always.
    answering_environment = ("ANTHROPIC_BASE_URL", "ANTHROPIC_CUSTOM_HEADERS")

    def _connect(self, sdk: ModuleType, base_url: str | None, timeout_seconds: float, http_client: Any) -> Any:
        key = os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise ModelUnavailable(f"{self.spec}: ANTHROPIC_API_KEY is not set; export it")
        return sdk.Anthropic(
            api_key=key,
            base_url=base_url,
            timeout=timeout_seconds,
            max_retries=0,
            http_client=http_client,
        )

    def complete(self, request: CompletionRequest) -> Completion:
        arguments: dict[str, Any] = {
            "model": self._model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages if m.role != "system"],
            "extra_body": {"temperature": min(request.temperature, 1.0)},  # Anthropic's range is [0, 1]
        }
        if request.system:
            arguments["system"] = request.system
        requests = [lambda: self._request(request, self._client.messages.create, arguments)] * request.n
        return completion_of(gather(self._pool, requests), request.n)

    def _answer(self, request: CompletionRequest, response: Any) -> Answer:
        text = "".join(_text(block) for block in listed(getattr(response, "content", None)))
        usage = getattr(response, "usage", None)
        return billed_answer(
            request, (text,), getattr(usage, "input_tokens", None), getattr(usage, "output_tokens", None)
        )


def _text(block: Any) -> str:
    text = getattr(block, "text", None)
    return text if isinstance(text, str) else ""  # a block of another kind (tool use), or of no kind at all


def create_anthropic_backend(spec: ModelSpec) -> Backend:
    return AnthropicBackend.from_spec(spec, "anthropic:claude-sonnet-4-5")


ANTHROPIC = BackendInfo(
    "anthropic",
    "Anthropic's Claude models; key from ANTHROPIC_API_KEY; options ?concurrency=N&rps=N",
    "anthropic:MODEL[@URL]",
    create_anthropic_backend,
    cache_identity=AnthropicBackend.cache_identity,
    url_form="anthropic:MODEL@https://HOST[:PORT]",
)
