"""The base of backends that call a server through its SDK (openai, anthropic): client, retries, limits, errors.

Each request is retried by the backend's policy (the SDK's own retries are off); each attempt holds
a slot of the concurrency gate, waits for the rate limit, and is over within the backend's timeout
whatever the server sends (deadline.py). The server's answer is read within the same mapping of
errors as the request (sdk_errors.py): whatever an answer of any shape brings about is an error of
that call. The key stays in the host, read from the environment by the subclass.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, ClassVar, Self

from selftaught.errors import ModelUnavailable
from selftaught.llm.base import Backend, CompletionRequest
from selftaught.llm.billing import Answer
from selftaught.llm.concurrency import AdaptiveConcurrency, Throttling
from selftaught.llm.deadline import bounded_http_client, deadline
from selftaught.llm.model_spec import ModelSpec
from selftaught.llm.options import MAX_CONCURRENT_REQUESTS, RateLimiter, parse_http_spec
from selftaught.llm.retry import RetryPolicy, reporting_unreachable, without_credentials
from selftaught.llm.sdk_errors import call_sdk

REQUEST_TIMEOUT_SECONDS = 600.0
DEFAULT_RETRY = RetryPolicy()


class HttpBackend(Backend):
    """A backend of `PREFIX:MODEL[@URL][?concurrency=N&rps=N]`; subclasses make the client and the requests."""

    #: The spec prefix, in messages and thread names.
    prefix: ClassVar[str]
    #: The SDK's package, imported when a backend is created, and its base exception class.
    sdk_package: ClassVar[str]
    sdk_error: ClassVar[str]
    #: The environment variables, read by the backend or its SDK, that decide which server answers and what it is
    #: sent; the first names the server, which a spec's `@URL` overrides.
    answering_environment: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        spec: str,
        model: str,
        base_url: str | None,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout_seconds: float | None = None,
        concurrency: int = MAX_CONCURRENT_REQUESTS,
        requests_per_second: float | None = None,
    ) -> None:
        try:
            self._sdk = importlib.import_module(self.sdk_package)
        except ImportError:
            raise ModelUnavailable(
                f"the {self.prefix} backend needs the {self.sdk_package} package: pip install {self.sdk_package}"
            ) from None
        self.spec = spec
        self._model = model
        self.retry = retry
        #: What a request may take in all, connecting, sending and receiving (None: REQUEST_TIMEOUT_SECONDS,
        #: looked up now: tests shorten it).
        self._timeout_seconds = REQUEST_TIMEOUT_SECONDS if timeout_seconds is None else timeout_seconds
        self._client = self._connect(self._sdk, base_url, self._timeout_seconds, bounded_http_client(self._sdk))
        self._server = str(self._client.base_url).rstrip("/")
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=self.prefix)
        self._rate = RateLimiter(requests_per_second)
        #: Every request in flight holds one of its slots: `?concurrency=` bounds what the server sees.
        self._gate = AdaptiveConcurrency(concurrency)
        self.concurrency = concurrency

    @classmethod
    def from_spec(cls, spec: ModelSpec, example: str, retry: RetryPolicy = DEFAULT_RETRY) -> Self:
        """The backend a parsed spec names; `example` is a spec naming a model, for the message when it names none."""
        parsed = parse_http_spec(spec, example)
        return cls(
            spec.text,
            parsed.model,
            parsed.base_url,
            retry=retry,
            concurrency=parsed.concurrency,
            requests_per_second=parsed.requests_per_second,
        )

    @classmethod
    def cache_identity(cls, spec: ModelSpec) -> str:
        """What its cached responses are filed under: the spec, and what the environment says of the server, if
        anything (hashed: it may hold a password), since another server answers otherwise."""
        names = cls.answering_environment[1:] if spec.base_url else cls.answering_environment
        settings = {name: os.environ[name] for name in names if os.environ.get(name)}
        if not settings:
            return spec.text  # as always: caches written before servers were told apart keep their keys
        server = cls.answering_environment[0]
        if server in settings:  # a user:password@ in it selects no other server
            settings[server] = without_credentials(settings[server]).rstrip("/")
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:16]
        return f"{spec.text}#{'+'.join(settings)}={digest}"

    @abstractmethod
    def _connect(self, sdk: ModuleType, base_url: str | None, timeout_seconds: float, http_client: Any) -> Any:
        """The SDK's client on `http_client` (whose requests end within the timeout), its own retries off; raises
        ModelUnavailable when no key is set."""

    @abstractmethod
    def _answer(self, request: CompletionRequest, response: Any) -> Answer:
        """The texts and tokens of the server's `response` to `request`, however it is shaped; raises BackendError
        (carrying the tokens it was billed for) when it is unusable."""

    def _request(self, request: CompletionRequest, create: Callable[..., Any], arguments: dict[str, Any]) -> Answer:
        """The answer to `create(**arguments)`, retried by the policy; raises BackendError (ModelOutage) with one line."""
        return self.retry.call(lambda: self._gate.send(lambda: self._attempt(request, create, arguments)))

    def _attempt(self, request: CompletionRequest, create: Callable[..., Any], arguments: dict[str, Any]) -> Answer:
        self._rate.wait()
        call = functools.partial(create, **arguments)
        with deadline(self._timeout_seconds):
            return call_sdk(
                self._sdk,
                getattr(self._sdk, self.sdk_error),
                self.spec,
                lambda: self._answer(request, reporting_unreachable(self._server, self.spec, call)),
            )

    def throttling(self) -> Throttling:
        return self._gate.report()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def listed(value: object) -> list[Any]:
    """A field of an answer that should be a list, as one: a server may send anything in its place."""
    return list(value) if isinstance(value, (list, tuple)) else []
