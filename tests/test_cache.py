"""The response cache: exact replay without live calls, clear misses, safe concurrent writers."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import STRONG_LPN_SOLUTION, ZERO_LPN_SOLUTION, fenced
from fake_servers import FakeServer, fake_server
from selftaught import api
from selftaught.api import RunOptions
from selftaught.llm.base import ChatMessage, CompletionRequest
from selftaught.llm.cache import CacheMode, ResponseCache, response_key
from selftaught.llm.pricing import CostMeter
from selftaught.llm.registry import cache_identity, open_backend

# Answers depend on the request order (index) and the temperature: a replay must reproduce both exactly.
VARYING = f"""
ANSWERS = [{fenced(STRONG_LPN_SOLUTION)!r}, {fenced(ZERO_LPN_SOLUTION)!r}, "no code at all"]

def respond(system, user, temperature, index):
    return ANSWERS[index % 3]
"""


@pytest.mark.slow
def test_a_run_replays_exactly_from_the_cache_without_live_calls(
    tmp_path: Path, options_for: Callable[..., RunOptions]
) -> None:
    responder = tmp_path / "varying.py"
    responder.write_text(VARYING)
    live = replace(options_for(f"scripted:{responder}", seed=7), workers=1)
    first = api.run(live)
    replayed = api.run(replace(live, cache=CacheMode.READ))
    assert [r.as_row() for r in replayed.iterations] == [r.as_row() for r in first.iterations]
    with sqlite3.connect(live.store) as db:
        hits = db.execute("SELECT cache_hit FROM lm_calls WHERE run_id = ?", (replayed.run_id,)).fetchall()
        errors = db.execute("SELECT COUNT(*) FROM lm_calls WHERE error IS NOT NULL").fetchone()[0]
    assert hits and all(hit == 1 for (hit,) in hits)
    assert errors == 0


def test_a_replay_of_something_never_asked_fails_clearly_and_the_run_goes_on(
    tmp_path: Path, options_for: Callable[..., RunOptions]
) -> None:
    responder = tmp_path / "varying.py"
    responder.write_text(VARYING)
    options = options_for(f"scripted:{responder}", seed=1)
    result = api.improve(replace(options, cache=CacheMode.READ))
    assert result.algorithm is None and "is not in the cache" in (result.error or "")


def test_a_replay_needs_no_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    backend = open_backend("openai:gpt-4o", CacheMode.READ, tmp_path / "cache.sqlite", CostMeter(None))
    request = CompletionRequest((ChatMessage("user", "hi"),), n=1, temperature=0.0, max_tokens=8, seed=1)
    with pytest.raises(Exception, match="not in the cache"):
        backend.complete(request)


def test_an_edited_scripted_model_does_not_replay_old_answers(tmp_path: Path) -> None:
    responder = tmp_path / "model.py"
    request = CompletionRequest((ChatMessage("user", "hi"),), n=1, temperature=0.0, max_tokens=8, seed=1)
    answers = []
    for answer in ("first", "second"):
        responder.write_text(f"def respond(system, user, temperature, index):\n    return {answer!r}\n")
        backend = open_backend(
            f"scripted:{responder}", CacheMode.READ_WRITE, tmp_path / "cache.sqlite", CostMeter(None)
        )
        answers.append(backend.complete(request).texts[0])
        backend.close()
    assert answers == ["first", "second"]


#: What the HTTP backends, or their SDKs, read from the environment to decide which server answers, and how.
SERVER_ENVIRONMENT = ("OPENAI_BASE_URL", "OPENAI_CUSTOM_HEADERS", "ANTHROPIC_BASE_URL", "ANTHROPIC_CUSTOM_HEADERS")


@pytest.mark.slow
@pytest.mark.parametrize(("prefix", "variable"), [("openai", "OPENAI_BASE_URL"), ("anthropic", "ANTHROPIC_BASE_URL")])
def test_answers_are_cached_apart_for_each_server_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str, variable: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    request = CompletionRequest((ChatMessage("user", "hi"),), n=1, temperature=0.0, max_tokens=8, seed=1)
    first, second = (FakeServer(lambda body, name=name: [f"from the {name} server"]) for name in ("first", "second"))
    answers = []
    with fake_server(first), fake_server(second):
        for server in (first, second, first):
            monkeypatch.setenv(variable, server.base_url if prefix == "openai" else server.base_url.removesuffix("/v1"))
            backend = open_backend(f"{prefix}:m", CacheMode.READ_WRITE, tmp_path / "cache.sqlite", CostMeter(None))
            answers.append(backend.complete(request).texts[0])
            backend.close()
    assert answers == ["from the first server", "from the second server", "from the first server"]
    assert len(first.requests) == len(second.requests) == 1  # the first server's answer, asked again, was cached


def test_a_specs_cache_identity_names_the_environments_server_only_when_there_is_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in SERVER_ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    # As before servers were told apart: existing caches keep their keys.
    assert cache_identity("openai:gpt-4o") == "openai:gpt-4o"
    assert cache_identity("anthropic:claude-sonnet-4-5") == "anthropic:claude-sonnet-4-5"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://user:secret@10.0.0.1:8000/v1")
    identity = cache_identity("openai:gpt-4o")
    assert identity.startswith("openai:gpt-4o#") and "secret" not in identity and "10.0.0.1" not in identity
    assert cache_identity("openai:m@http://127.0.0.1:8000/v1") == "openai:m@http://127.0.0.1:8000/v1"  # its own server
    monkeypatch.setenv("OPENAI_BASE_URL", "http://another:password@10.0.0.1:8000/v1/")
    assert cache_identity("openai:gpt-4o") == identity  # neither credentials nor a trailing / select another server
    monkeypatch.setenv("OPENAI_BASE_URL", "http://10.0.0.2:8000/v1")
    assert cache_identity("openai:gpt-4o") != identity
    monkeypatch.setenv("ANTHROPIC_CUSTOM_HEADERS", "anthropic-beta: something")
    assert cache_identity("anthropic:m@http://127.0.0.1:8000") != "anthropic:m@http://127.0.0.1:8000"


def test_concurrent_writers_share_one_cache_file(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    caches = [ResponseCache(path), ResponseCache(path)]
    request = CompletionRequest((ChatMessage("user", "x"),), n=1, temperature=0.5, max_tokens=8, seed=0)

    def write(cache: ResponseCache, offset: int) -> None:
        for index in range(200):
            key = response_key("spec", replace(request, seed=index), 0)
            cache.put([(key, f"answer {index}", 1, 2)])

    threads = [threading.Thread(target=write, args=(cache, n)) for n, cache in enumerate(caches * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    keys = [response_key("spec", replace(request, seed=index), 0) for index in range(200)]
    stored = caches[0].get(keys)
    assert len(stored) == 200 and stored[keys[5]] == ("answer 5", 1, 2)
