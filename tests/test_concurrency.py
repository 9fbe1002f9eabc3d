"""Requests in flight: `?concurrency=` bounds every one, a server's pushback lowers it, and improver runs follow the model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from conftest import TEST_PROFILE, ZERO_LPN_SOLUTION, fenced
from fake_servers import FakeServer, fake_server
from selftaught import api
from selftaught.api import RunOptions
from selftaught.errors import SelftaughtError
from selftaught.llm.anthropic_backend import AnthropicBackend
from selftaught.llm.base import Backend, ChatMessage, CompletionRequest
from selftaught.llm.concurrency import AdaptiveConcurrency
from selftaught.llm.openai_compatible import OpenAICompatibleBackend
from selftaught.llm.retry import RateLimited, RetryPolicy
from selftaught.loop.limits import MAX_IMPROVER_RUNS_VARIABLE, LimitedEvaluator, improver_run_guard

#: The default attempts, with short waits.
FAST_RETRY = RetryPolicy(initial_wait_seconds=0.01, max_wait_seconds=0.05)


def request(n: int = 1, seed: int = 0) -> CompletionRequest:
    return CompletionRequest(
        (ChatMessage("user", "Write a function."),), n=n, temperature=0.7, max_tokens=16, seed=seed
    )


def test_pushback_halves_the_limit_and_successes_grow_it_back_to_the_ceiling_only() -> None:
    gate = AdaptiveConcurrency(8)
    gate.throttled()
    gate.throttled()
    assert gate.report().limit == 2 and gate.report().throttled_requests == 2
    for _ in range(8 * 5):
        gate.succeeded()
    assert gate.report().limit == 7  # one step back for every 8 successes in a row
    for _ in range(100):
        gate.succeeded()
    assert gate.report().limit == 8
    for _ in range(10):
        gate.throttled()
    assert gate.report().limit == 1


class Briefly:
    """Takes 20 ms a call, counting the most calls under way at once."""

    def __init__(self) -> None:
        self.in_flight = self.most = 0
        self._lock = threading.Lock()

    def __call__(self, value: Any = None) -> Any:
        with self._lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(0.02)
        with self._lock:
            self.in_flight -= 1
        return value


def test_no_more_requests_are_in_flight_than_the_limit_allows() -> None:
    gate = AdaptiveConcurrency(3)
    request = Briefly()
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda _: gate.send(request), range(30)))
    assert request.most == 3 == gate.report().most_in_flight

    def refused() -> None:
        raise RateLimited("HTTP 429")

    with pytest.raises(RateLimited):
        gate.send(refused)
    assert gate.report().limit == 1


def openai(fake: FakeServer, concurrency: int) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend("openai:m", "m", fake.base_url, retry=FAST_RETRY, concurrency=concurrency)


@pytest.mark.slow
@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_bounds_every_request_the_server_sees(concurrency: int) -> None:
    """Split requests (a server that ignores `n`) and concurrent calls together never exceed `?concurrency=`."""
    with fake_server(FakeServer(lambda body: ["x"], delay_seconds=0.05)) as fake:
        backend = openai(fake, concurrency)
        try:
            with ThreadPoolExecutor(4) as pool:
                completions = list(pool.map(lambda seed: backend.complete(request(3, seed)), range(4)))
        finally:
            backend.close()
    assert all(len(completion.texts) == 3 for completion in completions)
    assert fake.most_in_flight == concurrency == backend.throttling().most_in_flight


def anthropic(fake: FakeServer, concurrency: int, monkeypatch: pytest.MonkeyPatch) -> Backend:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    return AnthropicBackend(
        "anthropic:m", "m", fake.base_url.removesuffix("/v1"), retry=FAST_RETRY, concurrency=concurrency
    )


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "pushback"), [("openai", 429), ("anthropic", 529)])
def test_a_server_that_takes_fewer_requests_at_once_is_found_out_without_failed_calls(
    kind: str, pushback: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fake_server(FakeServer(lambda body: ["x"], delay_seconds=0.03, at_once=1, pushback=pushback)) as fake:
        backend = openai(fake, 8) if kind == "openai" else anthropic(fake, 8, monkeypatch)
        try:
            with ThreadPoolExecutor(16) as pool:
                completions = list(pool.map(lambda seed: backend.complete(request(1, seed)), range(80)))
        finally:
            backend.close()
    throttling = backend.throttling()
    assert [completion.texts for completion in completions] == [("x",)] * 80
    assert throttling.throttled_requests > 0 and throttling.limit < 8


def test_the_memory_guard_reads_its_variable_and_refuses_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_IMPROVER_RUNS_VARIABLE, "3")
    assert improver_run_guard() == 3
    for bad in ("0", "-1", "many", "2.5"):
        monkeypatch.setenv(MAX_IMPROVER_RUNS_VARIABLE, bad)
        with pytest.raises(SelftaughtError, match=MAX_IMPROVER_RUNS_VARIABLE):
            improver_run_guard()
    monkeypatch.delenv(MAX_IMPROVER_RUNS_VARIABLE)
    assert improver_run_guard() >= 1


def slow_answers(delay: float) -> Callable[[dict[str, Any]], list[str]]:
    answer = fenced(ZERO_LPN_SOLUTION)

    def respond(body: dict[str, Any]) -> list[str]:
        time.sleep(delay)
        return [answer] * body.get("n", 1)

    return respond


@pytest.mark.slow
@pytest.mark.parametrize("guard", [None, "2"])
def test_improver_runs_wait_for_the_model_together_whatever_the_workers(
    guard: str | None, options_for: Callable[..., RunOptions], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The D runs of a meta-utility are in flight at once with one worker; the memory guard bounds them."""
    if guard is not None:
        monkeypatch.setenv(MAX_IMPROVER_RUNS_VARIABLE, guard)
    profile = replace(TEST_PROFILE, meta_utility_runs=4)
    # Long enough answers that the four runs' first requests overlap even when their children start slowly.
    with fake_server(FakeServer(slow_answers(1.0))) as fake:
        options = replace(options_for(f"openai:m@{fake.base_url}?concurrency=8"), profile=profile, workers=1)
        result = api.meta_utility(options)
    assert len(result.runs) == 4 and not any(run["error"] for run in result.runs)
    assert fake.most_in_flight == (4 if guard is None else 2)


def test_evaluations_run_at_most_workers_at_once_whoever_asks() -> None:
    briefly = Briefly()

    class Slow:
        def evaluate(self, task: Any, source: str, split: str, seed: int) -> Any:
            return briefly(seed)

    limited = LimitedEvaluator(Slow(), workers=2)
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda seed: limited.evaluate(None, "", "validation", seed), range(16))) == list(range(16))  # type: ignore[arg-type]
    assert briefly.most == 2


@pytest.mark.slow
def test_a_run_against_a_server_that_takes_fewer_requests_at_once_fails_no_call(
    options_for: Callable[..., RunOptions],
) -> None:
    profile = replace(TEST_PROFILE, meta_utility_runs=4)
    with fake_server(FakeServer(slow_answers(0.1), at_once=2)) as fake:
        options = replace(options_for(f"openai:m@{fake.base_url}?concurrency=8"), profile=profile, workers=1)
        result = api.meta_utility(options)
    assert len(result.runs) == 4 and not any(run["error"] for run in result.runs)
    assert fake.most_in_flight > 2  # the server did push back, and nothing failed for it
