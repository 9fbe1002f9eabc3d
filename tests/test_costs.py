"""What calls cost: the price table, the config file that extends it, and the run's spending limit."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import TEST_PROFILE, ZERO_LPN_SOLUTION, fenced
from fake_servers import FakeServer, fake_server
from selftaught import api
from selftaught.api import RunOptions
from selftaught.errors import SelftaughtError, UnknownModelSpec
from selftaught.llm.model_spec import ModelSpec
from selftaught.llm.pricing import PriceTable
from selftaught.loop.seed_improver import SEED_IMPROVER


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
