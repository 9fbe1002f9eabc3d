"""The contract every language-model backend fulfils (messages in, n responses out, usage reported) and its `BackendInfo`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from selftaught.llm.concurrency import Throttling
from selftaught.llm.model_spec import ModelSpec

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class CompletionRequest:
    """One request for `n` independent responses to the same conversation.

    `seed` makes sampling repeatable where the backend supports it; response i uses seed + i.
    """

    messages: tuple[ChatMessage, ...]
    n: int
    temperature: float
    max_tokens: int
    seed: int | None = None

    @property
    def system(self) -> str:
        return next((m.content for m in self.messages if m.role == "system"), "")

    @property
    def last_user_message(self) -> str:
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CompletionRequest:
        """The request a run's record describes: an improver's calls are one system and one user message."""
        return cls(
            messages=(ChatMessage("system", record["system"]), ChatMessage("user", record["message"])),
            n=record["n"],
            temperature=record["temperature"],
            max_tokens=record["max_tokens"],
            seed=record["seed"],
        )


@dataclass(frozen=True)
class Completion:
    """The responses to a request, in order, with the tokens they cost."""

    texts: tuple[str, ...]
    prompt_tokens: int
    completion_tokens: int
    #: True when every response came from the response cache, without a live call.
    cached: bool = False
    #: True when the responses came from the run's own record (resuming or replaying it).
    replayed: bool = False


class Backend(ABC):
    """A language model reachable by a spec string such as `openai:gpt-4o` or `llamacpp:smollm2`.

    Backends hold their own credentials and connections; they live only in the host process.
    `complete` raises `selftaught.errors.BackendError` with a one-line message when a request fails.
    """

    #: The spec string this backend was created from, as recorded in the store.
    spec: str
    #: Requests it serves at once: improver runs, which mostly wait for the model, run this many at a time.
    concurrency: int = 1

    @abstractmethod
    def complete(self, request: CompletionRequest) -> Completion: ...

    def throttling(self) -> Throttling:
        """How often its server pushed back on too many requests, and the most it had in flight (HTTP backends)."""
        return Throttling()

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Releases connections or model memory; the default has nothing to release."""



class WrappingBackend(Backend):
    """A backend in front of another (the circuit breaker, the cost limit): its spec, concurrency, throttling, close."""

    def __init__(self, backend: Backend) -> None:
        self.spec = backend.spec
        self.concurrency = backend.concurrency
        self._backend = backend

    def throttling(self) -> Throttling:
        return self._backend.throttling()

    def close(self) -> None:
        self._backend.close()


BackendFactory = Callable[[ModelSpec], Backend]


def _the_spec(spec: ModelSpec) -> str:
    return spec.text


@dataclass(frozen=True)
class BackendInfo:
    """A backend as the registry knows it: what the `selftaught.backends` entry point named `prefix` points at.

    Built-in and plugin backends alike declare one, as `NAME = BackendInfo(...)` in their module.
    """

    #: The spec prefix, `prefix:TARGET`; it must be the entry point's name.
    prefix: str
    #: One line for `selftaught models`.
    summary: str
    #: The spec's form, as in `openai:MODEL[@http://HOST:PORT/v1]`.
    example: str
    #: Makes the backend for a spec: raises ModelUnavailable (no key, no model file, a bad option) with one line.
    factory: BackendFactory
    #: What cached responses are filed under: the spec, plus whatever else decides the answers (a file's contents).
    cache_identity: Callable[[ModelSpec], str] = _the_spec
    #: How a spec names this backend's server, as in `openai:MODEL@http://HOST:PORT/v1`; None: it takes no URL.
    url_form: str | None = None
