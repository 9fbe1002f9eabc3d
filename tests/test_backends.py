"""What is particular to each backend (OpenAI's `n`, Anthropic's requests, timeouts, options) and the registry.

The contract every registered backend keeps is tested in tests/test_backend_conformance.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from conftest import STRONG_LPN_SOLUTION, fenced
from fake_servers import FakeServer, fake_server
from selftaught import api
from selftaught.api import RunOptions
from selftaught.errors import BackendError, ModelUnavailable, UnknownModelSpec
from selftaught.llm.anthropic_backend import AnthropicBackend
from selftaught.llm.base import ChatMessage, CompletionRequest
from selftaught.llm.openai_compatible import OpenAICompatibleBackend
from selftaught.llm.options import RateLimiter
from selftaught.llm.registry import create_backend
from selftaught.llm.retry import RetryPolicy

REQUEST = CompletionRequest(
    messages=(ChatMessage("system", "be brief"), ChatMessage("user", "hello")),
    n=3,
    temperature=0.5,
    max_tokens=32,
    seed=9,
)


@pytest.mark.slow
def test_openai_compatible_server_gets_the_request_and_the_key_stays_in_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-test")
    with fake_server(FakeServer(lambda body: [f"answer {i}" for i in range(body["n"])])) as fake:
        backend = create_backend(f"openai:test-model@{fake.base_url}")
        completion = backend.complete(REQUEST)
        backend.close()
    assert completion.texts == ("answer 0", "answer 1", "answer 2")
    assert (completion.prompt_tokens, completion.completion_tokens) == (11, 21)
    body = fake.requests[0]
    assert body["model"] == "test-model" and body["n"] == 3 and body["max_tokens"] == 32 and body["seed"] == 9
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert fake.headers[0]["authorization"] == "Bearer sk-local-test"


@pytest.mark.slow
def test_a_server_that_ignores_n_gets_the_rest_as_concurrent_requests() -> None:
    fake = FakeServer(lambda body: [f"seed {body['seed']}"], delay_seconds=0.3)
    with fake_server(fake) as served:
        backend = create_backend(f"openai:m@{served.base_url}")
        started = time.monotonic()
        completion = backend.complete(REQUEST)
        first = time.monotonic() - started
        started = time.monotonic()
        again = backend.complete(REQUEST)
        second = time.monotonic() - started
    assert completion.texts == again.texts == ("seed 9", "seed 10", "seed 11")
    assert [body["n"] for body in served.requests] == [3, 1, 1, 1, 1, 1]
    assert first < 0.3 * 2.7  # the first request, then the other two at once
    assert second < 0.3 * 1.7  # now known to ignore n: all three at once


FAST_RETRIES = RetryPolicy(attempts=3, initial_wait_seconds=0.01, max_wait_seconds=1.0)


def fast_backend(base_url: str, timeout_seconds: float = 30.0) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend("openai:m", "m", base_url, FAST_RETRIES, timeout_seconds)


@pytest.mark.slow
def test_rate_limits_and_server_errors_are_retried_honouring_retry_after() -> None:
    with fake_server(FakeServer(lambda body: ["fine"] * body["n"], faults=["429", "503"])) as fake:
        started = time.monotonic()
        completion = fast_backend(fake.base_url).complete(REQUEST)
        elapsed = time.monotonic() - started
    assert completion.texts == ("fine", "fine", "fine")
    assert len(fake.requests) == 3
    assert elapsed >= 0.35  # twice the server's Retry-After of 0.2 s, not the 0.01 s backoff


# Malformed answers of every HTTP backend: test_backend_conformance; one without choices is OpenAI's own.
@pytest.mark.slow
@pytest.mark.parametrize("fault", ["no_choices"])
def test_malformed_answers_are_one_line_errors(fault: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-in-errors")
    with (
        fake_server(FakeServer(lambda body: ["unused"], faults=[fault] * 3)) as fake,
        pytest.raises(BackendError) as raised,
    ):
        fast_backend(fake.base_url).complete(REQUEST)
    message = str(raised.value)
    assert "\n" not in message and "sk-never-in-errors" not in message and message.startswith("openai:m")


@pytest.mark.slow
def test_a_hanging_server_times_out() -> None:
    fake = FakeServer(lambda body: ["late"], faults=["hang", "hang", "hang"], hang_seconds=3.0)
    with fake_server(fake) as served:
        started = time.monotonic()
        with pytest.raises(BackendError, match="did not answer in time"):
            fast_backend(served.base_url, timeout_seconds=0.5).complete(REQUEST)
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_a_malformed_answer_is_an_error_of_the_improver_run_not_of_the_run(
    options_for: Callable[..., RunOptions],
) -> None:
    with fake_server(FakeServer(lambda body: ["unused"], faults=["malformed_json"])) as fake:
        result = api.improve(options_for(f"openai:any@{fake.base_url}"))
    assert result.algorithm is None and "malformed response" in (result.error or "")


@pytest.mark.slow
def test_improve_through_an_openai_compatible_server(options_for: Callable[..., RunOptions]) -> None:
    answer = fenced(STRONG_LPN_SOLUTION)
    with fake_server(FakeServer(lambda body: [answer] * body["n"])) as fake:
        result = api.improve(options_for(f"openai:any@{fake.base_url}"))
    assert result.utility_val > 0.95 and result.lm_responses == 2
    assert "Improve the following solution" in fake.requests[0]["messages"][1]["content"]


def test_scripted_backend_counts_responses_across_requests(scripted_model: Callable[..., str]) -> None:
    backend = create_backend(scripted_model("return f'{index}:{temperature}:{system}:{user}'"))
    assert backend.complete(REQUEST).texts == ("0:0.5:be brief:hello", "1:0.5:be brief:hello", "2:0.5:be brief:hello")
    assert backend.complete(REQUEST).texts[0].startswith("3:")


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("gpt-4o", UnknownModelSpec),
        ("unknown:thing", UnknownModelSpec),
        ("openai:", UnknownModelSpec),
        ("llamacpp:/no/such/model.gguf", ModelUnavailable),
        ("scripted:/no/such/file.py", ModelUnavailable),
    ],
)
def test_bad_specs_are_refused_clearly(spec: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        create_backend(spec)


@pytest.mark.slow
def test_anthropic_backend_asks_concurrently_and_keeps_the_key_in_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-local-test")
    fake = FakeServer(lambda body: [f"claude says {body['messages'][-1]['content']}"], delay_seconds=0.3)
    with fake_server(fake) as served:
        backend = create_backend(f"anthropic:claude-test@{served.base_url.removesuffix('/v1')}")
        started = time.monotonic()
        completion = backend.complete(REQUEST)
        elapsed = time.monotonic() - started
        backend.close()
    assert completion.texts == ("claude says hello",) * 3
    assert (completion.prompt_tokens, completion.completion_tokens) == (33, 21)
    assert elapsed < 0.3 * 3 * 0.8  # three requests of 0.3 s each, in parallel
    body = served.requests[0]
    assert body["model"] == "claude-test" and body["system"] == "be brief" and body["max_tokens"] == 32
    assert body["messages"] == [{"role": "user", "content": "hello"}] and body["temperature"] == 0.5
    sent = served.headers[0]
    assert sent.get("x-api-key") == "sk-ant-local-test" or sent.get("authorization") == "Bearer sk-ant-local-test"


def test_anthropic_without_a_key_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ModelUnavailable, match="ANTHROPIC_API_KEY is not set"):
        create_backend("anthropic:claude-test")


@pytest.mark.slow
def test_spec_options_limit_concurrency_and_rate() -> None:
    fake = FakeServer(lambda body: ["one"], delay_seconds=0.2)  # ignores n
    with fake_server(fake) as served:
        serial = create_backend(f"openai:m@{served.base_url}?concurrency=1")
        serial.complete(replace(REQUEST, n=1))
        started = time.monotonic()
        serial.complete(REQUEST)
        assert time.monotonic() - started >= 0.2 * 3 * 0.95  # one request at a time
    limiter = RateLimiter(per_second=20)
    started = time.monotonic()
    for _ in range(6):
        limiter.wait()
    assert time.monotonic() - started >= 0.25  # 6 starts at most 50 ms apart


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("openai:m@http://127.0.0.1:9/v1?rps=fast", "needs a positive number"),
        ("anthropic:claude?concurrency=0", "concurrency needs a whole number of at least 1, not '0'"),
        ("openai:m@http://127.0.0.1:9/v1?concurrency=0.5", "concurrency needs a whole number of at least 1, not '0.5'"),
        ("anthropic:claude?concurrency=2.5", "concurrency needs a whole number"),
        ("llamacpp:smollm2?threads=1.5", "threads needs a whole number"),
        ("openai:m@http://127.0.0.1:9/v1?rps=nan", "needs a positive number"),
        ("openai:m@http://127.0.0.1:9/v1?rps=inf", "needs a positive number"),
    ],
)
def test_bad_spec_options_are_refused(spec: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    with pytest.raises(ModelUnavailable, match=message):
        create_backend(spec)


# The other faults of every HTTP backend: test_backend_conformance.
@pytest.mark.slow
@pytest.mark.parametrize("fault", ["hang"])
def test_anthropic_faults_are_one_line_errors(fault: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-never-in-errors")
    fake = FakeServer(lambda body: ["unused"], faults=[fault] * 3, hang_seconds=2.0)
    with fake_server(fake) as served:
        backend = AnthropicBackend("anthropic:m", "m", served.base_url.removesuffix("/v1"), FAST_RETRIES, 0.5)
        with pytest.raises(BackendError) as raised:
            backend.complete(replace(REQUEST, n=1))
        backend.close()
    message = str(raised.value)
    assert message.startswith("anthropic:m") and "\n" not in message and "sk-ant-never-in-errors" not in message


@pytest.mark.slow
def test_anthropic_bills_the_answers_that_came_back_when_another_request_of_the_call_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-local-test")
    with fake_server(FakeServer(lambda body: ["paid for"], faults=["400"])) as served:
        backend = AnthropicBackend("anthropic:m", "m", served.base_url.removesuffix("/v1"), FAST_RETRIES)
        with pytest.raises(BackendError, match="HTTP 400") as raised:
            backend.complete(REQUEST)
        backend.close()
    # One of the three requests failed; the other two were answered, each billed 11 + 7 tokens.
    assert len(served.requests) == 3
    assert (raised.value.prompt_tokens, raised.value.completion_tokens) == (22, 14)


@pytest.mark.slow
def test_openai_bills_the_first_answer_when_the_requests_for_the_rest_fail() -> None:
    fake = FakeServer(lambda body: ["only one"], faults=["ok", "400", "400"])  # ignores n
    with fake_server(fake) as served, pytest.raises(BackendError, match="HTTP 400") as raised:
        fast_backend(served.base_url).complete(REQUEST)
    assert [body["n"] for body in served.requests] == [3, 1, 1]
    assert (raised.value.prompt_tokens, raised.value.completion_tokens) == (11, 7)


@pytest.mark.slow
def test_an_answer_without_choices_still_bills_its_prompt() -> None:
    fake = FakeServer(lambda body: ["unused"], faults=["no_choices"])
    with fake_server(fake) as served, pytest.raises(BackendError, match="no choices") as raised:
        fast_backend(served.base_url).complete(replace(REQUEST, n=1))
    assert (raised.value.prompt_tokens, raised.value.completion_tokens) == (11, 0)
