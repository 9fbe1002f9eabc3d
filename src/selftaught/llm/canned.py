"""A backend that asks no model: every response is one fixed text, at no cost.

It serves language-model calls whose answers do not matter to what is measured, but which must
be answered for the code that makes them to go on (the unsandboxing experiment's candidates).
Its spec starts with `canned:`, so the store shows which responses no model wrote.
"""

from __future__ import annotations

from selftaught.llm.base import Backend, Completion, CompletionRequest
from selftaught.llm.concurrency import LOCAL_CONCURRENCY

CANNED_PREFIX = "canned:"


class CannedBackend(Backend):
    def __init__(self, name: str, text: str) -> None:
        self.spec = CANNED_PREFIX + name
        self.concurrency = LOCAL_CONCURRENCY
        self._text = text

    def complete(self, request: CompletionRequest) -> Completion:
        # No tokens were spent; none are claimed.
        return Completion(texts=(self._text,) * request.n, prompt_tokens=0, completion_tokens=0)
