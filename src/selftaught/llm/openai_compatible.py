"""`openai:MODEL[@BASE_URL]` — OpenAI and any server speaking its chat-completions API (vLLM, Ollama, llama.cpp server).

The key comes from OPENAI_API_KEY and stays in the host; a server given by URL may need none.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

from selftaught.errors import BackendError, ModelUnavailable
from selftaught.llm.base import Backend, BackendInfo, Completion, CompletionRequest
from selftaught.llm.billing import Answer, billed_answer, completion_of, gather
from selftaught.llm.http_backend import DEFAULT_RETRY, HttpBackend, listed
from selftaught.llm.model_spec import ModelSpec

#: Placeholder key for local servers that ignore authentication.
NO_KEY = "not-needed"


class OpenAICompatibleBackend(HttpBackend):
    """Retries 429, 5xx, timeouts and dropped connections itself (the SDK's own retries are off)."""

    prefix = "openai"
    sdk_package = "openai"
    sdk_error = "OpenAIError"
    answering_environment = ("OPENAI_BASE_URL", "OPENAI_CUSTOM_HEADERS")
    #: Set once the server answered fewer than `n` responses: it ignores `n` (many local servers do).
    _server_ignores_n = False

    def _connect(self, sdk: ModuleType, base_url: str | None, timeout_seconds: float, http_client: Any) -> Any:
        key = os.environ.get("OPENAI_API_KEY")
        base_url = base_url or os.environ.get(self.answering_environment[0])
        if not key and not base_url:
            raise ModelUnavailable(
                f"{self.spec}: OPENAI_API_KEY is not set; export it, or give a local server as openai:MODEL@http://HOST:PORT/v1"
            )
        return sdk.OpenAI(
            api_key=key or NO_KEY,
            base_url=base_url,
            timeout=timeout_seconds,
            max_retries=0,
            http_client=http_client,
        )

    def complete(self, request: CompletionRequest) -> Completion:
        if self._server_ignores_n:
            return completion_of(gather(self._pool, self._single_requests(request, range(request.n))), request.n)
        answers = [self._create(request, request.n, 0)]
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
        return self._create(request, 1, offset)

    def _answer(self, request: CompletionRequest, response: Any) -> Answer:
        """The response's texts and tokens; one without choices fails, carrying the tokens it was billed for."""
        texts = tuple(_content(choice) for choice in listed(getattr(response, "choices", None)))
        usage = getattr(response, "usage", None)
        answer = billed_answer(
            request, texts, getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
        )
        if not texts:
            raise BackendError(
                f"{self.spec}: the server returned no choices", answer.prompt_tokens, answer.completion_tokens
            )
        return answer

    def _create(self, request: CompletionRequest, n: int, offset: int) -> Answer:
        arguments: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "n": n,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            arguments["seed"] = request.seed + offset
        return self._request(request, self._client.chat.completions.create, arguments)


def _content(choice: Any) -> str:
    message = getattr(choice, "message", None)
    content = getattr(message, "content", None)
    return content if isinstance(content, str) else ""


def create_openai_backend(spec: ModelSpec) -> Backend:
    # DEFAULT_RETRY looked up now, not when the function was defined: tests shorten the waits.
    return OpenAICompatibleBackend.from_spec(spec, "openai:gpt-4o", retry=DEFAULT_RETRY)


OPENAI = BackendInfo(
    "openai",
    "OpenAI, or any OpenAI-compatible server given by URL; key from OPENAI_API_KEY; options ?concurrency=N&rps=N",
    "openai:MODEL[@http://HOST:PORT/v1]",
    create_openai_backend,
    cache_identity=OpenAICompatibleBackend.cache_identity,
    url_form="openai:MODEL@http://HOST:PORT/v1",
)
