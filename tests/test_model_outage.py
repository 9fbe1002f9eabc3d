"""A model that cannot answer stops the run (interrupted, resumable), instead of burning it one error at a time."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import STRONG_LPN_SOLUTION, TEST_PROFILE, fenced
from fake_servers import FakeServer, fake_server
from selftaught import api
from selftaught.cli.main import cli
from selftaught.cli.plumbing import EXIT_MODEL_OUTAGE
from selftaught.errors import BackendError, ModelOutage
from selftaught.llm import openai_compatible
from selftaught.llm.base import Backend, ChatMessage, Completion, CompletionRequest
from selftaught.llm.billing import MIN_RESPONSE_CHARS
from selftaught.llm.cache import CacheMode
from selftaught.llm.circuit_breaker import BreakerBackend, CircuitBreaker
from selftaught.llm.pricing import CostMeter, PriceTable
from selftaught.llm.retry import RetryPolicy
from selftaught.loop.improver_run import ImproverRunner, ModelAccess, UtilityService
from selftaught.loop.recording import RunRecorder
from selftaught.loop.seed_improver import SEED_IMPROVER
from selftaught.loop.stats import RunStats
from selftaught.options import RunOptions
from selftaught.sandbox.launcher import CallRefused
from selftaught.sandbox.outcome import ChildOutcome
from selftaught.store.reading import StoreReader
from selftaught.store.run_store import RunStore

#: Retries as the real policy makes them, with waits short enough for a test.
QUICK_RETRY = RetryPolicy(attempts=2, initial_wait_seconds=0.01, max_wait_seconds=0.05)
PROFILE = replace(TEST_PROFILE, iterations=2)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_compatible, "DEFAULT_RETRY", QUICK_RETRY)


def capable_model(
    stop_after: Callable[[], None] | None = None, requests: int = 0
) -> Callable[[dict[str, Any]], list[str]]:
    """Answers as a capable model would, the same for the same request; calls `stop_after` after `requests` answers."""
    answered = 0
    lock = threading.Lock()

    def answer(body: dict[str, Any]) -> list[str]:
        nonlocal answered
        with lock:
            answered += 1
            if stop_after is not None and answered == requests:
                stop_after()
        prompt = body["messages"][-1]["content"]
        code = SEED_IMPROVER if "def improve_algorithm" in prompt else STRONG_LPN_SOLUTION
        return [fenced(code)] * body.get("n", 1)

    return answer


def options_at(options_for: Callable[..., RunOptions], url: str) -> RunOptions:
    # No response cache: what the resumed run is not asked again must come from the run's own record.
    return replace(options_for(f"openai:m@{url}"), profile=PROFILE, cache=CacheMode.OFF)


def iterations(report: api.RunReport) -> list[tuple[int, float, float, bool]]:
    return [(i.iteration, i.meta_utility_val, i.meta_utility_test, i.accepted) for i in report.iterations]


@pytest.mark.slow
def test_a_server_killed_mid_run_stops_the_run_and_resume_finishes_it_as_if_it_had_not(
    options_for: Callable[..., RunOptions], tmp_path: Any
) -> None:
    with fake_server(FakeServer(capable_model())) as reference_server:
        reference = api.run(replace(options_at(options_for, reference_server.base_url), store=tmp_path / "ref.sqlite"))
    total = len(reference_server.requests)
    assert total > 6

    killed = FakeServer(lambda body: [])
    killed.answer = capable_model(stop_after=killed.stop, requests=total // 2)
    with fake_server(killed):
        options = options_at(options_for, killed.base_url)
        with pytest.raises(ModelOutage, match="cannot reach the server"):
            api.run(options)
    with StoreReader(options.store) as reader:
        run = reader.runs()[-1]
        assert run["status"] == "interrupted"
        assert "cannot reach the server" in run["result"]["reason"]
        failed = [call for call in reader.lm_calls(run["id"]) if call["error"]]
    # The breaker stopped the run at the first call that failed for good, not one error per improver run.
    assert 1 <= len(failed) <= PROFILE.meta_utility_runs + 1

    port = int(killed.base_url.rsplit(":", 1)[1].split("/")[0])
    with fake_server(FakeServer(capable_model()), port=port) as restarted:
        resumed = api.resume(run["id"], options.store)
    assert iterations(resumed) == iterations(reference)
    # The answers the first attempt received were served from its record, not asked again.
    assert len(restarted.requests) <= total - total // 2 + len(failed)
    with StoreReader(options.store) as reader:
        assert reader.run(run["id"])["status"] == "finished"


@pytest.mark.slow
def test_a_refused_key_stops_the_run_at_once_and_says_how_to_continue(
    options_for: Callable[..., RunOptions], tmp_path: Any
) -> None:
    with fake_server(FakeServer(capable_model(), status=401, error_message="invalid api key")) as server:
        options = options_at(options_for, server.base_url)
        result = CliRunner().invoke(
            cli,
            ["run", "--model", options.model, "--store", str(options.store), "--iterations", "1", "--cache", "off"],
        )
    assert result.exit_code == EXIT_MODEL_OUTAGE, result.output
    assert "refused the API key" in result.stderr
    assert "selftaught run --resume" in result.stderr
    assert len(server.requests) == 1  # not one refused request per improver run
    with StoreReader(options.store) as reader:
        run = reader.runs()[-1]
    assert run["status"] == "interrupted" and "HTTP 401" in run["result"]["reason"]
    shown = CliRunner().invoke(cli, ["show", run["id"], "--store", str(options.store)])
    assert "HTTP 401" in shown.stdout


@pytest.mark.slow
def test_a_model_answering_badly_is_not_an_outage(options_for: Callable[..., RunOptions]) -> None:
    """Code that does not parse, or no code at all, is the model's answer: per-call, the run goes on."""
    with fake_server(FakeServer(lambda body: ["I would rather not."] * body.get("n", 1))) as server:
        report = api.run(options_at(options_for, server.base_url))
    assert len(report.iterations) == PROFILE.iterations + 1


@pytest.mark.slow
def test_a_server_refusing_every_request_for_what_it_asks_does_not_stop_the_run(
    options_for: Callable[..., RunOptions],
) -> None:
    with fake_server(FakeServer(capable_model(), status=400, error_message="prompt too long")) as server:
        report = api.run(options_at(options_for, server.base_url))
    assert len(report.iterations) == PROFILE.iterations + 1
    with StoreReader(options_at(options_for, server.base_url).store) as reader:
        assert reader.run(report.run_id)["status"] == "finished"


@pytest.mark.slow
@pytest.mark.parametrize("status", [403, 404, 500])
def test_generated_code_cannot_stop_the_run_by_what_it_asks(
    status: int, options_for: Callable[..., RunOptions]
) -> None:
    """A server that refuses one request's content (a provider's moderation answers 403) while it answers
    the host's own request: an error of that call, never an outage, so no improver can stop the run for good."""

    def moderated(body: dict[str, Any]) -> int:
        return status if "def improve_algorithm" in body["messages"][-1]["content"] else 200

    fake = FakeServer(capable_model(), status_for=moderated, error_message="your input was flagged")
    with fake_server(fake) as server:
        report = api.run(options_at(options_for, server.base_url))
    assert len(report.iterations) == PROFILE.iterations + 1
    with StoreReader(options_at(options_for, server.base_url).store) as reader:
        assert reader.run(report.run_id)["status"] == "finished"
        errors = [call["error"] for call in reader.lm_calls(report.run_id) if call["error"]]
    assert errors and all(f"HTTP {status}" in error for error in errors)


@pytest.mark.slow
def test_a_refused_request_trips_the_breaker_when_the_hosts_own_request_is_refused_too(
    options_for: Callable[..., RunOptions],
) -> None:
    with fake_server(FakeServer(capable_model(), status=403, error_message="forbidden")) as server:
        options = options_at(options_for, server.base_url)
        with pytest.raises(ModelOutage, match="the host's own request"):
            api.run(options)
    with StoreReader(options.store) as reader:
        assert reader.runs()[-1]["status"] == "interrupted"


class Failing(Backend):
    def __init__(self, error: BackendError | None) -> None:
        self.spec, self.concurrency, self.error, self.requests = "failing", 1, error, 0

    def complete(self, request: CompletionRequest) -> Completion:
        self.requests += 1
        if self.error is None:
            return Completion(texts=("x",), prompt_tokens=1, completion_tokens=1)
        raise self.error


REQUEST = CompletionRequest(messages=(ChatMessage("user", "hi"),), n=1, temperature=0.0, max_tokens=8)


def test_the_breaker_trips_on_an_outage_and_then_fails_every_request_without_sending_it() -> None:
    backend = Failing(ModelOutage("gone"))
    guarded = BreakerBackend(backend, breaker := CircuitBreaker())
    with pytest.raises(ModelOutage):
        guarded.complete(REQUEST)
    assert breaker.reason is not None and "gone" in breaker.reason
    with pytest.raises(ModelOutage):
        guarded.complete(REQUEST)
    assert backend.requests == 1


def test_what_a_request_asks_never_trips_the_breaker_however_often_it_fails() -> None:
    """Generated code writes the requests: a request refused for its content must not stop the run."""
    backend = Failing(BackendError("HTTP 400: the prompt is longer than the context"))
    guarded = BreakerBackend(backend, breaker := CircuitBreaker())
    for _ in range(100):
        with pytest.raises(BackendError):
            guarded.complete(REQUEST)
    assert breaker.reason is None and backend.requests == 100


def test_a_server_error_on_every_attempt_trips_the_breaker_only_if_nothing_got_through_meanwhile() -> None:
    breaker = CircuitBreaker()
    answering = BreakerBackend(Failing(None), breaker)

    class AnotherRequestGetsThrough(Failing):
        def complete(self, request: CompletionRequest) -> Completion:
            answering.complete(REQUEST)  # while this one was being retried
            return super().complete(request)

    flaky = ModelOutage("HTTP 500: this request crashes the server (after 5 attempts)", certain=False)
    with pytest.raises(BackendError) as raised:
        BreakerBackend(AnotherRequestGetsThrough(flaky), breaker).complete(REQUEST)
    assert not isinstance(raised.value, ModelOutage) and breaker.reason is None
    with pytest.raises(ModelOutage):
        BreakerBackend(Failing(flaky), breaker).complete(REQUEST)
    assert breaker.reason is not None and "HTTP 500" in breaker.reason


@pytest.mark.slow
def test_a_server_ignoring_max_tokens_cannot_grow_the_store_or_the_cache(
    options_for: Callable[..., RunOptions],
) -> None:
    huge = fenced(STRONG_LPN_SOLUTION) + "#" * 5_000_000
    with fake_server(FakeServer(lambda body: [huge] * body.get("n", 1))) as server:
        options = replace(options_for(f"openai:m@{server.base_url}"), profile=PROFILE)
        result = api.improve(options)
    assert result.algorithm is not None and "def algorithm" in result.algorithm  # the code came first: kept
    kept = MIN_RESPONSE_CHARS
    with StoreReader(options.store) as reader:
        responses = [text for call in reader.lm_calls(result.run_id) for text in call["responses"]]
    assert responses and all(len(text) <= kept for text in responses)
    assert options.store.parent.joinpath("cache.sqlite").stat().st_size < 2_000_000


def test_a_probe_that_times_out_confirms_nothing() -> None:
    """On a server that serves one request at a time, generated code can keep it busy with slow requests:
    the host's own request then times out too, and that must not stop the run."""
    slow = ModelOutage("the server did not answer in time (after 5 attempts)", certain=False, busy=True)
    breaker = CircuitBreaker()
    with pytest.raises(BackendError) as raised:
        BreakerBackend(Failing(slow), breaker).complete(REQUEST)
    assert not isinstance(raised.value, ModelOutage) and breaker.reason is None


@pytest.mark.slow
@pytest.mark.parametrize("tokens", [10**20, 10**310])
def test_an_absurd_token_count_from_a_server_is_not_believed(
    tokens: int, options_for: Callable[..., RunOptions], tmp_path: Any
) -> None:
    """10**310 overflowed the price's float and 10**20 the store's integers: the run crashed."""
    from selftaught.llm.billing import counted_tokens

    assert counted_tokens(tokens, 123) == 123
    config = tmp_path / "prices.toml"
    config.write_text('[prices."openai:gpt-4o"]\ninput = 2.5\noutput = 10\n')
    answer = fenced(STRONG_LPN_SOLUTION)
    with fake_server(FakeServer(lambda body: [answer] * body.get("n", 1), prompt_tokens=tokens)) as server:
        spec = f"openai:gpt-4o@{server.base_url}"
        result = api.improve(replace(options_for(spec), profile=PROFILE, config=config))
    assert result.algorithm is not None and math.isfinite(result.cost_usd)


class _BuggyBackend(Backend):
    """A backend (a plugin's, say) whose own bug raises what no backend should."""

    spec = "buggy:model"

    def complete(self, request: CompletionRequest) -> Completion:
        raise TypeError("'int' object is not iterable")


class _ServingJobs:
    """Plays the job runner: an improver job makes each of `calls` in turn, keeping what came back or the refusal."""

    def __init__(self, calls: list[tuple[str, dict[str, Any]]]) -> None:
        self.calls = calls
        self.answers: list[Any] = []

    def run(self, job: Any, limits: Any, serve: Any = None) -> ChildOutcome:
        for method, params in self.calls:
            try:
                self.answers.append(serve(method, params))
            except CallRefused as refusal:
                self.answers.append(refusal)
        return ChildOutcome(result=None, has_result=True)


def _improver_run(tmp_path: Any, backend: Backend, score: Callable[[str, int], float], jobs: _ServingJobs) -> str:
    """Runs an improver on `jobs` with `backend` and `score` as its services; returns the run's id in the store."""
    store = RunStore(tmp_path / "runs.sqlite")
    run_id = store.create_run(command="improve", task="parity_noiseless", model="m", seed=0, config={}, options={})
    breaker = CircuitBreaker()
    model = ModelAccess(BreakerBackend(backend, breaker), PriceTable.load(None), CostMeter(None), breaker)
    runner = ImproverRunner(jobs, model, RunRecorder(store, run_id), RunStats(), TEST_PROFILE.improver)
    try:
        runner.run(
            SEED_IMPROVER,
            initial_solution="def algorithm(*args):\n    return 0\n",
            utility=UtilityService("utility", 2, score),
            purpose="self-improvement",
            parent_id=None,
            seed=0,
        )
    finally:
        store.close()
    return run_id


PROMPT = ("language_model.prompt", {"expertise": "e", "message": "m", "n_responses": 1})
UTILITY = ("utility", {"solution": "def algorithm(*args):\n    return 1\n"})


def test_a_services_own_failure_refuses_that_call_recorded_and_the_run_goes_on(tmp_path: Any) -> None:
    def buggy_score(solution: str, improver_run_id: int) -> float:
        raise RuntimeError("a scorer's own bug\non two lines")

    jobs = _ServingJobs([PROMPT, UTILITY, PROMPT])
    run_id = _improver_run(tmp_path, _BuggyBackend(), buggy_score, jobs)
    assert all(isinstance(answer, CallRefused) and "\n" not in str(answer) for answer in jobs.answers)
    assert "TypeError: 'int' object is not iterable" in str(jobs.answers[0])
    assert "RuntimeError: a scorer's own bug on two lines" in str(jobs.answers[1])
    with StoreReader(tmp_path / "runs.sqlite") as reader:
        calls = reader.lm_calls(run_id)
        events = reader.events(run_id)
    assert [call["error"] for call in calls] == ["buggy:model: TypeError: 'int' object is not iterable"] * 2
    assert [event["kind"] for event in events] == ["service_error"]
    assert "a scorer's own bug on two lines" in json.dumps(events[0]["detail"])


def test_an_outage_and_an_interruption_still_end_the_run_from_inside_a_service(tmp_path: Any) -> None:
    class Out(_BuggyBackend):
        def complete(self, request: CompletionRequest) -> Completion:
            raise ModelOutage("buggy:model: the server refused the API key")

    def interrupted(solution: str, improver_run_id: int) -> float:
        raise KeyboardInterrupt

    with pytest.raises(ModelOutage, match="refused the API key"):
        _improver_run(tmp_path, Out(), interrupted, _ServingJobs([PROMPT]))
    with pytest.raises(KeyboardInterrupt):
        _improver_run(tmp_path, _BuggyBackend(), interrupted, _ServingJobs([UTILITY]))
