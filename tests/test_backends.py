"""Language-model backends: the OpenAI-compatible one against a local server, the scripted one, the registry."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import STRONG_LPN_SOLUTION, fenced
from fake_openai import FakeOpenAI, fake_openai_server
from selftaught import api
from selftaught.api import RunOptions
from selftaught.errors import BackendError, ModelUnavailable, UnknownModelSpec
from selftaught.llm.base import ChatMessage, CompletionRequest
from selftaught.llm.registry import create_backend

REQUEST = CompletionRequest(
    messages=(ChatMessage("system", "be brief"), ChatMessage("user", "hello")),
    n=3,
    temperature=0.5,
    max_tokens=32,
    seed=9,
)


def test_openai_compatible_server_gets_the_request_and_the_key_stays_in_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-test")
    with fake_openai_server(FakeOpenAI(lambda body: [f"answer {i}" for i in range(body["n"])])) as fake:
        backend = create_backend(f"openai:test-model@{fake.base_url}")
        completion = backend.complete(REQUEST)
        backend.close()
    assert completion.texts == ("answer 0", "answer 1", "answer 2")
    assert (completion.prompt_tokens, completion.completion_tokens) == (11, 21)
    body = fake.requests[0]
    assert body["model"] == "test-model" and body["n"] == 3 and body["max_tokens"] == 32 and body["seed"] == 9
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert fake.headers[0]["authorization"] == "Bearer sk-local-test"


def test_a_server_that_ignores_n_is_asked_again() -> None:
    with fake_openai_server(FakeOpenAI(lambda body: [f"only one of {body['n']}"])) as fake:
        completion = create_backend(f"openai:m@{fake.base_url}").complete(REQUEST)
    assert completion.texts == ("only one of 3", "only one of 2", "only one of 1")


def test_server_errors_become_one_line_backend_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak")
    with fake_openai_server(FakeOpenAI(lambda body: [], status=400)) as fake, pytest.raises(BackendError) as raised:
        create_backend(f"openai:m@{fake.base_url}").complete(REQUEST)
    assert "HTTP 400" in str(raised.value) and "sk-should-not-leak" not in str(raised.value)
    with pytest.raises(BackendError, match="cannot reach the server"):
        create_backend("openai:m@http://127.0.0.1:9/v1").complete(REQUEST)


def test_improve_through_an_openai_compatible_server(options_for: Callable[..., RunOptions]) -> None:
    answer = fenced(STRONG_LPN_SOLUTION)
    with fake_openai_server(FakeOpenAI(lambda body: [answer] * body["n"])) as fake:
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
