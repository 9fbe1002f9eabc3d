"""What calls cost: the price table, the config file that extends it, and the run's spending limit."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import TEST_PROFILE, ZERO_LPN_SOLUTION, fenced
from fake_servers import FakeServer, fake_server
from selftaught import api
from selftaught.api import RunOptions
from selftaught.cli.main import cli
from selftaught.errors import BackendError, SelftaughtError, UnknownModelSpec
from selftaught.llm.base import Backend, Completion, CompletionRequest
from selftaught.llm.billing import Answer, gather
from selftaught.llm.budgeted import BudgetedLanguageModel, LanguageModelRefusal
from selftaught.llm.model_spec import ModelSpec
from selftaught.llm.pricing import CostMeter, Price, PriceTable
from selftaught.loop.seed_improver import SEED_IMPROVER
from selftaught.store.rows import CallRow


def test_prices_by_spec_or_model_name_local_models_free_unknown_ones_unpriced() -> None:
    table = PriceTable.load()
    assert table.cost("openai:gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.5)
    assert table.cost("openai:gpt-4o@http://localhost:8000/v1", 2_000, 0) == pytest.approx(0.005)
    assert table.cost("llamacpp:smollm2", 10**9, 10**9) == 0.0
    assert table.cost("openai:some-model-nobody-priced", 10, 10) is None


def test_a_specs_options_never_make_a_priced_model_unpriced() -> None:
    table = PriceTable.load()
    assert table.cost("openai:gpt-4o?concurrency=2", 1_000_000, 0) == pytest.approx(2.5)
    assert table.cost("openai:gpt-4o@http://127.0.0.1:1/v1?concurrency=2&rps=3", 0, 1_000_000) == pytest.approx(10.0)
    assert table.cost("llamacpp:smollm2?threads=2", 10**9, 10**9) == 0.0


def test_one_parser_reads_backend_model_url_and_options() -> None:
    spec = ModelSpec.parse("openai:gpt-4o@http://host:8000/v1?concurrency=2&rps=0.5")
    assert (spec.backend, spec.target, spec.model, spec.base_url) == (
        "openai",
        "gpt-4o@http://host:8000/v1",
        "gpt-4o",
        "http://host:8000/v1",
    )
    assert spec.options == (("concurrency", "2"), ("rps", "0.5"))
    assert spec.without_options == "openai:gpt-4o@http://host:8000/v1"
    assert spec.numbers({"concurrency": 8, "rps": None}) == {"concurrency": 2.0, "rps": 0.5}
    assert ModelSpec.parse("llamacpp:smollm2").base_url is None
    for bad in ("gpt-4o", "openai:", ":model", "openai:?concurrency=2"):
        with pytest.raises(UnknownModelSpec):
            ModelSpec.parse(bad)


def test_the_config_file_adds_and_overrides_prices(tmp_path: Path) -> None:
    config = tmp_path / "selftaught.toml"
    config.write_text('[prices."openai:gpt-4o"]\ninput = 1.0\noutput = 2.0\n[prices.my-model]\ninput = 4\noutput = 8\n')
    table = PriceTable.load(config)
    assert table.cost("openai:gpt-4o", 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert table.cost("openai:my-model@http://127.0.0.1:1/v1", 1_000_000, 0) == pytest.approx(4.0)
    config.write_text('[prices."openai:x"]\ninput = "cheap"\n')
    with pytest.raises(SelftaughtError, match="needs numbers input and output"):
        PriceTable.load(config)


@pytest.mark.slow
def test_the_run_ends_cleanly_at_its_cost_limit(tmp_path: Path, options_for: Callable[..., RunOptions]) -> None:
    config = tmp_path / "selftaught.toml"
    config.write_text('[prices."openai:pricey"]\ninput = 1000\noutput = 1000\n')
    answer = fenced(ZERO_LPN_SOLUTION)
    with fake_server(FakeServer(lambda body: [answer] * body["n"])) as fake:
        options = replace(
            options_for(f"openai:pricey@{fake.base_url}"),
            profile=replace(TEST_PROFILE, iterations=3),
            max_cost_usd=0.01,
            config=config,
            workers=1,
        )
        report = api.run(options)
        # With more money the same run goes on after its last complete iteration, its spending carried over.
        resumed = api.resume(report.run_id, options.store, max_cost_usd=10.0)
    assert resumed.run_id == report.run_id and [it.iteration for it in resumed.iterations] == [0, 1, 2, 3]
    assert resumed.iterations[0] == report.iterations[0] and resumed.stopped is None
    assert resumed.cost_usd > report.cost_usd
    # The first call of iteration 0 costs (11 + 14 tokens) x $0.001 = $0.025 > $0.01: the second run's call is
    # refused, and the loop stops before iteration 1.
    assert report.stopped == "cost limit reached" and len(report.iterations) == 1
    assert report.cost_usd == pytest.approx(0.025)
    with sqlite3.connect(options.store) as db:
        costs = [row[0] for row in db.execute("SELECT cost_usd FROM lm_calls WHERE run_id = ?", (report.run_id,))]
        status = db.execute("SELECT status FROM runs WHERE id = ?", (report.run_id,)).fetchone()[0]
        refused = db.execute(
            "SELECT error FROM improver_runs WHERE run_id = ? AND error LIKE '%cost limit%'", (report.run_id,)
        )
        assert len(refused.fetchall()) == 1
    assert costs[0] == pytest.approx(0.025) and status == "finished"
    assert sum(costs) == pytest.approx(resumed.cost_usd)


@pytest.mark.slow
def test_a_run_stopped_by_its_cost_limit_says_how_to_go_on_and_the_resumed_summary_adds_up(tmp_path: Path) -> None:
    config = tmp_path / "selftaught.toml"
    config.write_text('[prices."openai:pricey"]\ninput = 1000\noutput = 1000\n')
    answer = fenced(ZERO_LPN_SOLUTION)
    store = str(tmp_path / "runs.sqlite")
    common = ["--store", store, "--config", str(config), "--cache", "off"]
    with fake_server(FakeServer(lambda body: [answer] * body["n"])) as fake:
        spec = f"openai:pricey@{fake.base_url}"
        first = CliRunner().invoke(
            cli, ["run", "--model", spec, "--iterations", "2", "--max-cost", "0.01", *common], terminal_width=400
        )
        assert first.exit_code == 0, first.output
        run_id = first.stdout.split("run ", 1)[1].split()[0]
        assert f"higher limit: selftaught run --resume {run_id} --store {store} --max-cost USD" in first.stdout
        stopped = CliRunner().invoke(cli, ["show", run_id, "--store", store, "--json"])
        before = json.loads(stopped.stdout)
        text = CliRunner().invoke(
            cli, ["run", "--resume", run_id, "--store", store, "--max-cost", "10"], terminal_width=400
        )
        assert text.exit_code == 0, text.output
    # Resumed as text: this attempt and the whole run, each labelled.
    assert "this attempt: " in text.stdout and "answered from the run's record" in text.stdout
    assert "the whole run: " in text.stdout
    with sqlite3.connect(store) as db:
        paid = db.execute("SELECT COUNT(*), SUM(cost_usd) FROM lm_calls WHERE replayed = 0").fetchone()
        replayed = db.execute("SELECT COUNT(*) FROM lm_calls WHERE replayed = 1").fetchone()[0]
    assert f"the whole run: {paid[0]} language-model calls" in text.stdout
    assert f"${paid[1]:.4f} of the $10 cap spent" in text.stdout
    assert f"({replayed} answered from the run's record)" in text.stdout
    assert paid[0] > before["lm_calls"]


def test_a_cost_limit_on_a_model_without_a_price_is_refused_before_anything_starts(
    tmp_path: Path, options_for: Callable[..., RunOptions]
) -> None:
    with fake_server(FakeServer(lambda body: ["never asked"] * body["n"])) as fake:
        options = replace(options_for(f"openai:unpriced@{fake.base_url}?concurrency=2"), max_cost_usd=1.0)
        with pytest.raises(SelftaughtError, match=r'\[prices\."openai:unpriced@http://[^"]+/v1"\] input = USD'):
            api.run(options)
        assert fake.requests == [] and not options.store.exists()
        # Saying the model is free (a price of 0) lets the limit apply: it is never reached.
        config = tmp_path / "selftaught.toml"
        config.write_text(f'[prices."openai:unpriced@{fake.base_url}"]\ninput = 0\noutput = 0\n')
        table = PriceTable.load(config)
        table.check_limit(options.model, 1.0)
        assert table.cost(options.model, 10**6, 10**6) == 0.0
    # Local models are free without saying so.
    PriceTable.load().check_limit("llamacpp:smollm2?threads=1", 0.5)
    PriceTable.load().check_limit("scripted:/any/file.py", 0.5)


@pytest.mark.slow
def test_transfer_shares_one_cost_limit_across_its_tasks(
    tmp_path: Path, options_for: Callable[..., RunOptions]
) -> None:
    config = tmp_path / "selftaught.toml"
    config.write_text('[prices."openai:pricey"]\ninput = 1000\noutput = 1000\n')
    answer = fenced(ZERO_LPN_SOLUTION)
    with fake_server(FakeServer(lambda body: [answer] * body["n"])) as fake:
        options = replace(options_for(f"openai:pricey@{fake.base_url}"), max_cost_usd=0.01, config=config, workers=1)
        api.transfer(options, SEED_IMPROVER, ["parity_noise", "parity_noiseless"], repeats=1)
    # The first call ($0.025) reaches the limit: nothing more is asked, on this task or the next.
    assert len(fake.requests) == 1


class PaidThenFailed(Backend):
    """A call of which some requests were answered, and billed, before another failed."""

    spec = "openai:pricey"

    def complete(self, request: CompletionRequest) -> Completion:
        raise BackendError("openai:pricey: HTTP 400: one request failed", prompt_tokens=1000, completion_tokens=500)


def test_a_failed_call_is_charged_for_the_responses_that_came_back() -> None:
    meter = CostMeter(limit_usd=1.0)
    calls: list[CallRow] = []
    model = BudgetedLanguageModel(
        PaidThenFailed(),
        budget=5,
        max_responses_per_call=3,
        max_tokens=32,
        next_seed=lambda: 0,
        on_call=calls.append,
        prices=PriceTable({"openai:pricey": Price(1000.0, 1000.0)}),
        meter=meter,
    )
    with pytest.raises(LanguageModelRefusal, match="HTTP 400"):
        model.prompt("expert", "improve this", n_responses=3)
    # (1000 + 500 tokens) x $0.001: past the $1 limit, so no further live call is made.
    assert meter.spent_usd == pytest.approx(1.5) and meter.exhausted
    (call,) = calls
    assert call.error is not None and "HTTP 400" in call.error and call.responses == ()
    assert (call.prompt_tokens, call.completion_tokens, call.cost_usd) == (1000, 500, pytest.approx(1.5))


def test_answers_paid_for_count_whatever_the_failure_of_another_request() -> None:
    """A request failing with an error of the client library, not a BackendError, once lost the others' tokens."""

    def failing() -> Answer:
        raise ValueError("unexpected response shape")

    with ThreadPoolExecutor(2) as pool, pytest.raises(BackendError, match="ValueError") as raised:
        gather(pool, [lambda: Answer(("fine",), 100, 20), failing], earlier=[Answer(("before",), 7, 3)])
    assert (raised.value.prompt_tokens, raised.value.completion_tokens) == (107, 23)

    def interrupted() -> Answer:
        raise KeyboardInterrupt

    with ThreadPoolExecutor(2) as pool, pytest.raises(KeyboardInterrupt):
        gather(pool, [lambda: Answer(("fine",), 100, 20), interrupted])


@pytest.mark.slow
def test_a_failed_anthropic_call_counts_against_the_runs_cost_limit(
    tmp_path: Path, options_for: Callable[..., RunOptions], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-local-test")
    config = tmp_path / "selftaught.toml"
    config.write_text('[prices."anthropic:pricey"]\ninput = 1000\noutput = 1000\n')
    # The seed improver's call asks for two responses: two requests, one answered and one refused.
    fake = FakeServer(lambda body: [fenced(ZERO_LPN_SOLUTION)], faults=["ok", "400"] * 20)
    with fake_server(fake) as served:
        options = replace(
            options_for(f"anthropic:pricey@{served.base_url.removesuffix('/v1')}"),
            max_cost_usd=0.01,
            config=config,
            workers=1,
        )
        result = api.improve(options)
    # The call failed, but its answered request (11 + 7 tokens at $0.001) was paid for, and counts.
    assert len(served.requests) == 2 and "HTTP 400" in (result.error or "")
    assert result.cost_usd == pytest.approx(0.018)


@pytest.mark.parametrize("cost", [-1.0, math.nan, math.inf])
def test_the_meter_refuses_a_cost_that_would_lower_or_blur_the_spending(cost: float) -> None:
    meter = CostMeter(limit_usd=1.0)
    meter.add(0.25)
    with pytest.raises(ValueError, match="finite"):
        meter.add(cost)
    assert meter.spent_usd == 0.25


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_a_price_must_be_a_finite_number_of_at_least_zero(tmp_path: Path, value: str) -> None:
    config = tmp_path / "selftaught.toml"
    config.write_text(f'[prices."openai:x"]\ninput = {value}\noutput = 1\n')
    with pytest.raises(SelftaughtError, match=r"a price must be a finite number of USD \(at least 0\)"):
        PriceTable.load(config)


@pytest.mark.parametrize("limit", [math.nan, math.inf, -1.0])
def test_a_cost_limit_must_be_a_finite_number_of_at_least_zero(limit: float) -> None:
    with pytest.raises(SelftaughtError, match=r"max_cost_usd must be a finite number of USD \(at least 0\)"):
        RunOptions(max_cost_usd=limit)


@pytest.mark.parametrize("limit", ["nan", "inf"])
def test_max_cost_refuses_what_is_not_a_finite_number(limit: str) -> None:
    result = CliRunner().invoke(
        cli, ["improve", "--model", "openai:gpt-4o@http://127.0.0.1:9/v1", "--max-cost", limit, "--dry-run"]
    )
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if "Error" in line or "error" in line]
    assert len(errors) == 1 and "--max-cost" in errors[0] and "finite" in errors[0], result.stderr
