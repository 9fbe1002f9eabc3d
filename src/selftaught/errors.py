"""Errors meant for the user: each one's message is a complete, one-line explanation."""

from __future__ import annotations


class SelftaughtError(Exception):
    """Something the user can fix; the CLI prints its message without a traceback."""


class UnknownModelSpec(SelftaughtError):
    """A model spec names no registered backend."""


class ModelUnavailable(SelftaughtError):
    """A backend cannot start: missing package, key, or model file."""


class BackendError(SelftaughtError):
    """A language-model request failed.

    A call of several requests may fail after some were answered: those were billed, and the error
    carries their tokens so that the cost limit counts them. A request that failed without an
    answer (an error status, a timeout, a dropped connection) is taken as unbilled.
    """

    def __init__(self, message: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens


class ModelOutage(BackendError):
    """The model cannot be used at all: its server is unreachable, refuses the key, or fails every request.

    Unlike a failed call (an error the improver sees and may survive), an outage stops the run: it is
    recorded as interrupted, with this message as the reason, and `--resume` continues it.

    `certain` is False for what one request could have brought on itself (a server error or a timeout,
    every attempt): the run's circuit breaker then trips only if no other request got through meanwhile.
    `busy` is True when every attempt timed out or was pushed back: a server busy with other requests
    says the same, so it never confirms an outage.
    """

    def __init__(
        self,
        message: str,
        certain: bool = True,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        busy: bool = False,
    ) -> None:
        super().__init__(message, prompt_tokens, completion_tokens)
        self.certain = certain
        self.busy = busy


class UnknownTask(SelftaughtError):
    """A task name that is not registered."""


class InvalidProgram(SelftaughtError):
    """A program given by the user (an improver or a solution file) cannot be used."""


class SandboxError(SelftaughtError):
    """The sandbox cannot start children on this machine."""


class StoreError(SelftaughtError):
    """The run store cannot be opened or written."""
