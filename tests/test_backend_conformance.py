"""One contract, every registered backend: built-in or plugin, each backend `registered_backends()` lists passes it.

A harness says how to reach a backend: through the local fake server (tests/fake_servers.py, which
speaks both the OpenAI and the Anthropic API), a scripted file, or the embedded model. A backend
without a harness fails the suite with the line to add. What is particular to one backend (how the
OpenAI one splits `n` for servers that ignore it, how Anthropic's requests look) stays in
tests/test_backends.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

from fake_servers import FakeServer, fake_server
from selftaught.errors import BackendError, ModelOutage, ModelUnavailable
from selftaught.llm import http_backend
from selftaught.llm.base import Backend, ChatMessage, Completion, CompletionRequest
from selftaught.llm.billing import MIN_RESPONSE_CHARS
from selftaught.llm.concurrency import Throttling
from selftaught.llm.registry import cache_identity, create_backend, registered_backends
from selftaught.llm.retry import RetriesRequests, RetryPolicy

pytestmark = pytest.mark.slow  # every case talks to a real server (or the embedded model)

REQUEST = CompletionRequest(
    messages=(ChatMessage("system", "be brief"), ChatMessage("user", "hello")),
    n=3,
    temperature=0.5,
    max_tokens=8,  # few: the embedded model takes its time over each token
    seed=9,
)
SINGLE = replace(REQUEST, n=1)
#: Every key the backends read: none may show in an error message.
KEY = "sk-never-in-errors"
#: Three attempts, waits short enough for a test.
FAST_RETRY = RetryPolicy(attempts=3, pushback_attempts=3, initial_wait_seconds=0.01, max_wait_seconds=0.05)


class Harness:
    """How the suite reaches one backend; `tmp_path` for files, `stack` for servers that stop with the test."""

    marks: ClassVar[tuple[pytest.MarkDecorator, ...]] = ()

    def __init__(self, tmp_path: Path, stack: ExitStack) -> None:
        self.tmp_path = tmp_path
        self.stack = stack

    def spec(self) -> str:
        """A spec whose backend answers every request."""
        raise NotImplementedError

    def another_spec(self) -> str:
        """A spec of another model, or of the same one run otherwise: its responses are cached apart."""
        raise NotImplementedError

    def settings_seen(self, completion: Completion) -> tuple[float, int | None] | None:
        """The temperature and max_tokens the model got for the last request (None for one it takes no max_tokens);
        None when the suite cannot see them: then the completion's tokens must stay within max_tokens."""
        raise NotImplementedError

    def failing_spec(self) -> str | None:
        """A spec whose every request fails, the model being usable otherwise; None when no such spec can be made."""
        raise NotImplementedError


class ServerHarness(Harness):
    """A backend that calls a server: the fake server stands in for it, answering `answer {i}` to response i."""

    prefix: ClassVar[str]

    def url(self, base_url: str) -> str:
        """A server's URL (`http://HOST:PORT/v1`) as a spec of this backend gives it."""
        return base_url

    def serve(self, fake: FakeServer) -> FakeServer:
        return self.stack.enter_context(fake_server(fake))

    def spec_at(self, base_url: str, model: str = "m") -> str:
        return f"{self.prefix}:{model}@{self.url(base_url)}"

    def spec_of(self, fake: FakeServer, model: str = "m") -> str:
        return self.spec_at(fake.base_url, model)

    def spec(self) -> str:
        self.fake = self.serve(FakeServer(lambda body: [f"answer {i}" for i in range(body["n"])]))
        return self.spec_of(self.fake)

    def another_spec(self) -> str:
        return self.spec_of(self.fake, "another-model")

    def settings_seen(self, completion: Completion) -> tuple[float, int | None]:
        body = self.fake.requests[-1]
        return body["temperature"], body["max_tokens"]

    def failing_spec(self) -> str:
        return self.spec_of(self.serve(FakeServer(lambda body: [], status=400)))


class OpenAIHarness(ServerHarness):
    prefix = "openai"


class AnthropicHarness(ServerHarness):
    prefix = "anthropic"

    def url(self, base_url: str) -> str:
        return base_url.removesuffix("/v1")  # the SDK adds /v1/messages


RESPONDER = "def respond(system, user, temperature, index):\n    return f'temperature={temperature} index={index}'\n"


class ScriptedHarness(Harness):
    def write(self, name: str, source: str) -> str:
        path = self.tmp_path / name
        path.write_text(source)
        return f"scripted:{path}"

    def spec(self) -> str:
        return self.write("responder.py", RESPONDER)

    def another_spec(self) -> str:
        return self.write("another.py", RESPONDER.replace("temperature=", "t="))

    def settings_seen(self, completion: Completion) -> tuple[float, None]:
        return float(completion.texts[0].split()[0].removeprefix("temperature=")), None

    def failing_spec(self) -> str:
        return self.write(
            "raising.py", "def respond(system, user, temperature, index):\n    raise RuntimeError('boom')\n"
        )


class LlamaCppHarness(Harness):
    """The real embedded model: a few seconds to load, and it answers what it likes."""

    marks = (pytest.mark.embedded, pytest.mark.slow)

    def spec(self) -> str:
        return "llamacpp:smollm2?threads=2&context=2048"

    def another_spec(self) -> str:
        return "llamacpp:smollm2?threads=1&context=2048"

    def settings_seen(self, completion: Completion) -> None:
        return None

    def failing_spec(self) -> None:
        return None


HARNESSES: dict[str, type[Harness]] = {
    "anthropic": AnthropicHarness,
    "llamacpp": LlamaCppHarness,
    "openai": OpenAIHarness,
    "scripted": ScriptedHarness,
}


def _parameters(servers_only: bool = False) -> list[Any]:
    prefixes = [info.prefix for info in registered_backends()]
    if servers_only:
        prefixes = [prefix for prefix in prefixes if issubclass(HARNESSES.get(prefix, Harness), ServerHarness)]
    return [pytest.param(prefix, marks=HARNESSES[prefix].marks if prefix in HARNESSES else ()) for prefix in prefixes]


@contextmanager
def _harness(prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    if prefix not in HARNESSES:
        pytest.fail(
            f"the backend {prefix!r} has no conformance harness: add a Harness for it to HARNESSES in {__file__}",
            pytrace=False,
        )
    for variable in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(variable, KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with ExitStack() as stack:
        yield HARNESSES[prefix](tmp_path, stack)


@pytest.fixture(params=_parameters())
def harness(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with _harness(request.param, tmp_path, monkeypatch) as made:
        yield made


@pytest.fixture(params=_parameters(servers_only=True))
def server(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerHarness]:
    with _harness(request.param, tmp_path, monkeypatch) as made:
        assert isinstance(made, ServerHarness)
        yield made


@contextmanager
def opened(spec: str) -> Iterator[Backend]:
    """The backend a spec names, retrying quickly if it retries at all, closed afterwards."""
    backend = create_backend(spec)
    if isinstance(backend, RetriesRequests):
        backend.retry = FAST_RETRY
    try:
        yield backend
    finally:
        backend.close()


def test_answers_n_responses_and_reports_their_tokens(harness: Harness) -> None:
    spec = harness.spec()
    with opened(spec) as backend:
        completion = backend.complete(REQUEST)
        assert backend.spec == spec
    assert len(completion.texts) == REQUEST.n and all(isinstance(text, str) for text in completion.texts)
    assert isinstance(completion.prompt_tokens, int) and completion.prompt_tokens > 0
    assert isinstance(completion.completion_tokens, int) and completion.completion_tokens >= 0
    assert not completion.cached and not completion.replayed


def test_gives_the_model_the_requests_temperature_and_max_tokens(harness: Harness) -> None:
    request = replace(SINGLE, temperature=0.25, max_tokens=5)
    with opened(harness.spec()) as backend:
        completion = backend.complete(request)
    seen = harness.settings_seen(completion)
    if seen is None:
        assert completion.completion_tokens <= request.max_tokens * request.n
    else:
        assert seen[0] == request.temperature and seen[1] in (request.max_tokens, None)


def test_says_how_many_requests_it_serves_at_once_and_closes(harness: Harness) -> None:
    backend = create_backend(harness.spec())
    assert isinstance(backend.concurrency, int) and backend.concurrency >= 1
    backend.complete(SINGLE)
    assert isinstance(backend.throttling(), Throttling)
    assert backend.close() is None


def test_caches_each_model_apart_and_the_same_model_alike(harness: Harness) -> None:
    spec, another = harness.spec(), harness.another_spec()
    assert isinstance(cache_identity(spec), str) and cache_identity(spec) == cache_identity(spec)
    assert cache_identity(another) != cache_identity(spec)


def test_refuses_an_option_it_does_not_know(harness: Harness) -> None:
    spec = harness.spec()
    with pytest.raises(ModelUnavailable, match="unknown option 'no_such_option'"):
        create_backend(f"{spec}{'&' if '?' in spec else '?'}no_such_option=1")


def test_a_failed_request_is_a_one_line_backend_error_that_stops_nothing(harness: Harness) -> None:
    spec = harness.failing_spec()
    if spec is None:
        pytest.skip("no request of this backend can be made to fail")
    with opened(spec) as backend, pytest.raises(BackendError) as raised:
        backend.complete(SINGLE)
    assert not isinstance(raised.value, ModelOutage)
    assert "\n" not in str(raised.value) and KEY not in str(raised.value)


def closed_port() -> int:
    """A port of 127.0.0.1 nothing listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("failure", "certain", "message"),
    [
        pytest.param("401", True, "HTTP 401", id="401"),
        pytest.param("500", False, r"HTTP 500.*\(after 3 attempts\)", id="500"),
        pytest.param(
            "unreachable",
            True,
            r"cannot reach the server at http://127\.0\.0\.1:\d+.*: connection refused",
            id="unreachable",
        ),
    ],
)
def test_a_server_that_no_request_gets_through_is_a_model_outage(
    server: ServerHarness, failure: str, certain: bool, message: str
) -> None:
    fake = None
    if failure == "unreachable":
        spec = server.spec_at(f"http://127.0.0.1:{closed_port()}/v1")
    else:
        fake = server.serve(FakeServer(lambda body: [], status=int(failure), error_message="no"))
        spec = server.spec_of(fake)
    with opened(spec) as backend, pytest.raises(ModelOutage, match=message) as raised:
        backend.complete(SINGLE)
    assert raised.value.certain is certain
    assert "\n" not in str(raised.value) and KEY not in str(raised.value)
    if fake is not None:  # a refused key is not asked again; a failing server is, by the retry policy
        assert len(fake.requests) == (FAST_RETRY.attempts if failure == "500" else 1)


def test_rate_limits_and_server_errors_are_retried(server: ServerHarness) -> None:
    fake = server.serve(FakeServer(lambda body: ["after waiting"], faults=["429", "500"]))
    with opened(server.spec_of(fake)) as backend:
        assert backend.complete(SINGLE).texts == ("after waiting",)
    assert len(fake.requests) == 3


@pytest.mark.parametrize("fault", ["malformed_json", "invalid_utf8"])
def test_malformed_answers_are_one_line_errors(server: ServerHarness, fault: str) -> None:
    fake = server.serve(FakeServer(lambda body: ["unused"], faults=[fault] * 3))
    spec = server.spec_of(fake)
    with opened(spec) as backend, pytest.raises(BackendError) as raised:
        backend.complete(SINGLE)
    message = str(raised.value)
    assert message.startswith(spec.partition("@")[0]) and "\n" not in message and KEY not in message


def test_huge_and_empty_answers_come_back_as_text_a_huge_one_cut_to_what_max_tokens_can_be(
    server: ServerHarness,
) -> None:
    answers = iter([["x" * 10_000_000], [""]])
    fake = server.serve(FakeServer(lambda body: next(answers)))
    with opened(server.spec_of(fake)) as backend:
        assert backend.complete(SINGLE).texts[0] == "x" * MIN_RESPONSE_CHARS  # 32 a token of 8: less than a program
        assert backend.complete(SINGLE).texts == ("",)


#: Answers of 200 with bodies of every wrong shape: each is an answer (its texts) or an error of the call.
ODD_BODIES = {
    "choices_int": {"choices": 5, "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
    "choices_string": {"choices": "abc"},
    "choices_of_nothing": {"choices": [None, 3, "x"]},
    "message_int": {"choices": [{"message": 7}]},
    "content_parts": {"choices": [{"message": {"content": [{"type": "text", "text": "hi"}]}}]},
    "content_int": {"content": 5, "usage": {"input_tokens": 1, "output_tokens": 1}},
    "text_int": {"content": [{"type": "text", "text": 5}]},
    "blocks_of_nothing": {"content": [None, 1, {"type": "text"}]},
    "usage_wrong": {"choices": [{"message": {"content": "x"}}], "content": [{"type": "text", "text": "x"}], "usage": 7},
    "a_list": [1, 2, 3],
    "a_string": "hello",
    "null": None,
}


@pytest.mark.parametrize("body", list(ODD_BODIES.values()), ids=list(ODD_BODIES))
def test_an_answer_of_any_shape_is_texts_or_a_one_line_error_of_the_call(server: ServerHarness, body: object) -> None:
    fake = server.serve(FakeServer(lambda request: [], body_for=lambda request: body))
    spec = server.spec_of(fake)
    with opened(spec) as backend:
        try:
            completion = backend.complete(SINGLE)
        except BackendError as error:
            message = str(error)
            assert message.startswith(spec) and "\n" not in message and KEY not in message
            assert not isinstance(error, ModelOutage)
        else:
            assert all(isinstance(text, str) for text in completion.texts)
            assert min(completion.prompt_tokens, completion.completion_tokens) >= 0


@pytest.mark.parametrize("fault", ["drip", "drip_headers"])
def test_a_server_dripping_its_answer_times_out_within_the_backends_timeout(
    server: ServerHarness, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte at a time keeps every read short: the timeout bounds the whole request, which then reads as a timeout."""
    monkeypatch.setattr(http_backend, "REQUEST_TIMEOUT_SECONDS", 1.0)
    fake = server.serve(FakeServer(lambda body: ["late"], faults=[fault] * 3, hang_seconds=30, drip_seconds=0.05))
    started = time.monotonic()
    with opened(server.spec_of(fake)) as backend, pytest.raises(ModelOutage, match="did not answer in time") as raised:
        backend.complete(SINGLE)
    assert time.monotonic() - started < FAST_RETRY.attempts * 1.0 + 2
    assert raised.value.busy and not raised.value.certain  # as any timeout: the circuit breaker makes sure


#: What a request's tokens are taken to be when the server does not say: its UTF-8 bytes ("be brief",
#: "hello"), plus 16 tokens per message for the chat template's role markers.
PROMPT_BOUND = 8 + 5 + 2 * 16
#: "naïve answer" is 12 characters, 13 bytes; one more token for the end of the text.
ANSWER, COMPLETION_BOUND = "naïve answer", 13 + 1


@pytest.mark.parametrize(
    ("fault", "tokens"), [("no_usage", (PROMPT_BOUND, COMPLETION_BOUND)), ("negative_usage", (PROMPT_BOUND, 7))]
)
def test_usage_missing_or_negative_is_charged_at_an_upper_bound(
    server: ServerHarness, fault: str, tokens: tuple[int, int]
) -> None:
    fake = server.serve(FakeServer(lambda body: [ANSWER], faults=[fault]))
    with opened(server.spec_of(fake)) as backend:
        completion = backend.complete(SINGLE)
    assert completion.texts == (ANSWER,)
    assert (completion.prompt_tokens, completion.completion_tokens) == tokens


def test_every_harness_is_of_a_registered_backend() -> None:
    """A harness left behind by a backend that is gone would test nothing."""
    assert set(HARNESSES) <= {info.prefix for info in registered_backends()}
