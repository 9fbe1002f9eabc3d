"""The contract every language-model backend fulfils: chat messages in, n responses out, usage reported."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from selftaught.llm.concurrency import Throttling

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
    #: For replayed responses: what they cost when the run paid for them (0 for a cache hit, None unpriced).
    recorded_cost_usd: float | None = 0.0


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
