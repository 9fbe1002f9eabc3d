"""What each HTTP response was billed for, counted whatever becomes of the rest of its call.

A call of n responses may take several requests. Each answer is turned into its texts and tokens
as soon as it arrives, and when one request fails the others are still waited for: the failure
carries the tokens of every answer that came back (`BackendError.prompt_tokens`, `.completion_tokens`).
A server's token counts are trusted only when they are integers of at least 0; a missing or
unusable count is replaced by an upper bound, so that no server can switch the cost limit off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, wait
from dataclasses import dataclass

from selftaught.errors import BackendError, ModelOutage
from selftaught.llm.base import ChatMessage, Completion, CompletionRequest
from selftaught.text import encodable

#: Tokens a chat template may add to each message (role markers, separators): part of a prompt's upper bound.
TEMPLATE_TOKENS_PER_MESSAGE = 16
#: The end-of-text token a response may be billed for beyond its text.
END_TOKENS_PER_RESPONSE = 1


@dataclass(frozen=True)
class Answer:
    """One HTTP response: the texts it brought and the tokens it was billed for."""

    texts: tuple[str, ...]
    prompt_tokens: int
    completion_tokens: int


#: More tokens than any answer has: a count above it is a server's nonsense (10**310 overflowed the
#: price's float, the store's and the cache's integers).
MAX_REPORTED_TOKENS = 10**9


def counted_tokens(reported: object, upper_bound: int) -> int:
    """The server's count when it is an integer from 0 to `MAX_REPORTED_TOKENS`; otherwise (missing,
    negative, absurd, not an integer) `upper_bound`: an unreadable count must never lower what the cost
    limit sees."""
    if isinstance(reported, int) and not isinstance(reported, bool) and 0 <= reported <= MAX_REPORTED_TOKENS:
        return reported
    return upper_bound


def prompt_tokens_bound(messages: Iterable[ChatMessage]) -> int:
    """At least the prompt's tokens: a byte-level tokenizer's token is at least one byte of text."""
    return sum(
        len(message.content.encode("utf-8", "surrogatepass")) + TEMPLATE_TOKENS_PER_MESSAGE for message in messages
    )


def completion_tokens_bound(texts: Iterable[str]) -> int:
    """At least the tokens of the returned texts, by the same reasoning."""
    # surrogatepass: a lone surrogate (valid JSON, "\ud800") counts as the three bytes it came as.
    return sum(len(text.encode("utf-8", "surrogatepass")) + END_TOKENS_PER_RESPONSE for text in texts)


#: Characters kept of a response: what `max_tokens` tokens can be in any tokenizer, and never less than a
#: program may be (scripted models and servers that ignore `max_tokens` answer long programs to short
#: limits), nor more than a bound: a server sending megabytes cannot grow the store, the cache and the host.
CHARS_PER_TOKEN_KEPT = 32
MIN_RESPONSE_CHARS = 256_000
MAX_RESPONSE_CHARS = 1_000_000


def kept_response(text: str, max_tokens: int) -> str:
    """The part of a response the run keeps, encodable."""
    return encodable(text[: min(MAX_RESPONSE_CHARS, max(MIN_RESPONSE_CHARS, CHARS_PER_TOKEN_KEPT * max_tokens))])


def billed_answer(
    request: CompletionRequest, texts: tuple[str, ...], reported_prompt: object, reported_completion: object
) -> Answer:
    """An answer to `request` with the tokens its server reported, or their upper bounds where it did not.

    Billed for all it sent; what is kept of each text is bounded by `kept_response`.
    """
    return Answer(
        tuple(kept_response(text, request.max_tokens) for text in texts),
        counted_tokens(reported_prompt, prompt_tokens_bound(request.messages)),
        counted_tokens(reported_completion, completion_tokens_bound(texts)),
    )


def gather(pool: Executor, requests: Iterable[Callable[[], Answer]], earlier: Sequence[Answer] = ()) -> list[Answer]:
    """Runs the requests at once and waits for every one of them; when any failed, raises the first failure
    with the tokens of all the call's answers, `earlier` ones (already received for this call) included."""
    futures = [pool.submit(request) for request in requests]
    wait(futures)
    failures = [error for error in (future.exception() for future in futures) if error is not None]
    answers = [future.result() for future in futures if future.exception() is None]
    if failures:
        first = failures[0]
        if not isinstance(first, Exception):
            raise first  # an interruption (Ctrl-C) goes on as it is
        # A failure may itself carry tokens: an answer that came back unusable (without choices) was billed too.
        unusable = [
            Answer((), error.prompt_tokens, error.completion_tokens)
            for error in failures
            if isinstance(error, BackendError)
        ]
        billed = [*earlier, *answers, *unusable]
        # Any other failure (a client library's own error) still leaves the answered requests paid for.
        message = str(first) if isinstance(first, BackendError) else f"{type(first).__name__}: {first}"
        tokens = sum(part.prompt_tokens for part in billed), sum(part.completion_tokens for part in billed)
        # An outage among the failures is what the call ran into: the run's circuit breaker must see it as one.
        outage = next((error for error in failures if isinstance(error, ModelOutage)), None)
        if outage is not None:
            raise ModelOutage(str(outage), outage.certain, *tokens, busy=outage.busy) from None
        raise BackendError(message, *tokens) from (None if isinstance(first, BackendError) else first)
    return answers


def completion_of(answers: Sequence[Answer], n: int) -> Completion:
    """The first `n` texts of the answers, and the tokens of all of them (every answer was billed)."""
    return Completion(
        texts=tuple(text for answer in answers for text in answer.texts)[:n],
        prompt_tokens=sum(answer.prompt_tokens for answer in answers),
        completion_tokens=sum(answer.completion_tokens for answer in answers),
    )
