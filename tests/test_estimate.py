"""Money before it is spent: `--dry-run` estimates that bound what a run spends, and a cap overshot only by the calls in flight."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import TEST_PROFILE, ZERO_LPN_SOLUTION, responder_returning
from fake_servers import FakeServer, fake_server
from selftaught import api
from selftaught.api import RunOptions
from selftaught.cli.main import cli
from selftaught.config import ImproverBudget
from selftaught.loop.estimate import estimate_improve
from selftaught.loop.seed_improver import SEED_IMPROVER

#: Budgets for which a scripted run is quick; responses up to 512 tokens hold a whole improver.
BUDGETS = [
    "--lm-calls", "1", "--responses-per-call", "2", "--utility-budget", "3",
    "--meta-utility-budget", "2", "--meta-utility-runs", "2", "--max-tokens", "512", "--iterations", "1",
]  # fmt: skip
REMOTE = "openai:gpt-4o@http://127.0.0.1:9/v1?concurrency=2"


def invoke(*arguments: str) -> Result:
    return CliRunner().invoke(cli, list(arguments), catch_exceptions=False)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--iterations", "1"],
        ["improve"],
        ["meta-utility"],
        ["transfer", "--tasks", "maxcut,three_sat", "--repeats", "2"],
        ["experiment", "unsandboxing", "--attempts", "5"],
    ],
)
def test_a_dry_run_estimates_and_calls_or_records_nothing(command: list[str], tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    if command[0] == "transfer":
        command = [*command, "--improver", write(tmp_path / "improver.py", SEED_IMPROVER)]
    # Nothing listens on port 9: any attempt to connect would fail the command.
    common = ["--model", REMOTE, "--profile", "paper", "--store", str(store), "--dry-run"]
    data = json.loads(invoke(*command, *common, "--json").stdout)
    assert data["estimate"] == "worst case" and data["model"] == REMOTE and data["profile"] == "paper"
    assert data["lm_calls"] > 0 and data["lm_responses"] >= data["lm_calls"]
    assert data["completion_tokens"] == data["lm_responses"] * 1024 and data["prompt_tokens"] > 0
    assert data["usd"] == pytest.approx((data["prompt_tokens"] * 2.5 + data["completion_tokens"] * 10.0) / 1e6)
    text = invoke(*command, *common)
    assert text.exit_code == 0 and "worst case:" in text.stdout and f"${data['usd']:.4f}" in text.stdout
    assert list(tmp_path.iterdir()) == ([tmp_path / "improver.py"] if command[0] == "transfer" else [])


def test_the_paper_profile_estimate_counts_every_call_it_allows() -> None:
    data = json.loads(invoke("run", "--profile", "paper", "--model", REMOTE, "--dry-run", "--json").stdout)
    # D·L for iteration 0, then per iteration L + (meta-utility calls + 1)·D·L: 20 + 3·(4 + 26·20).
    assert (data["lm_calls"], data["lm_responses"]) == (1592, 1592 * 6)


def test_a_prompt_of_digits_or_emoji_is_counted_at_a_token_a_byte(options_for: Callable[..., RunOptions]) -> None:
    """Tokenizers give digits, CJK text and emoji about a token a byte or more: the bound must hold for them too."""
    for text in ("31415926535 " * 400, "\U0001f600" * 1000, "\u6f22\u5b57" * 1000):
        solution = f"TABLE = {text!r}\n\ndef algorithm(*args):\n    return TABLE\n"
        estimate = estimate_improve(options_for("openai:gpt-4o"), SEED_IMPROVER, solution)
        per_response = estimate.prompt_tokens // estimate.lm_responses
        assert per_response >= len(solution.encode("utf-8")) + len(SEED_IMPROVER.encode("utf-8"))


def test_a_dry_run_refuses_a_cost_limit_on_a_model_without_a_price(tmp_path: Path) -> None:
    result = invoke("run", "--model", "openai:mystery@http://127.0.0.1:9/v1", "--max-cost", "1", "--dry-run")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert '[prices."openai:mystery@http://127.0.0.1:9/v1"]' in result.stderr and "selftaught.toml" in result.stderr


@pytest.mark.slow
def test_the_estimate_bounds_what_a_scripted_run_spends(
    tmp_path: Path, scripted_model: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = scripted_model(*responder_returning(ZERO_LPN_SOLUTION, SEED_IMPROVER))
    monkeypatch.chdir(tmp_path)  # ./selftaught.toml prices the scripted model like a real one
    write(tmp_path / "selftaught.toml", f'[prices."{model}"]\ninput = 3.0\noutput = 15.0\n')
    store = tmp_path / "runs.sqlite"
    common = ["--model", model, "--store", str(store), "--workers", "2", "--max-cost", "100", *BUDGETS]
    estimate = json.loads(invoke("run", *common, "--dry-run", "--json").stdout)
    assert not store.exists()
    result = invoke("run", *common, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[0].startswith("worst case: ")
    actual = json.loads(result.stdout)
    with sqlite3.connect(store) as db:
        prompt, completion = db.execute(
            "SELECT SUM(prompt_tokens), SUM(completion_tokens) FROM lm_calls WHERE run_id = ?", (actual["run_id"],)
        ).fetchone()
    print(
        f"estimate ${estimate['usd']:.4f}, {estimate['lm_calls']} calls, {estimate['lm_responses']} responses, "
        f"{estimate['prompt_tokens']}+{estimate['completion_tokens']} tokens; actual ${actual['cost_usd']:.4f}, "
        f"{actual['lm_calls']} calls, {actual['lm_responses']} responses, {prompt}+{completion} tokens"
    )
    assert 0 < actual["lm_calls"] <= estimate["lm_calls"]
    assert 0 < actual["lm_responses"] <= estimate["lm_responses"]
    assert 0 < prompt <= estimate["prompt_tokens"] and 0 < completion <= estimate["completion_tokens"]
    assert 0 < actual["cost_usd"] <= estimate["usd"] and actual["max_cost_usd"] == 100
    assert actual["cost_usd"] == pytest.approx((prompt * 3.0 + completion * 15.0) / 1e6)
    # Transferring the run's improver, dry: it is read from the store, which stays as it was.
    before = store.read_bytes()
    transfer = invoke(
        "transfer", "--improver", actual["run_id"], "--tasks", "maxcut", "--model", model, "--store", str(store),
        "--dry-run", "--json",
    )  # fmt: skip
    assert transfer.exit_code == 0, transfer.stderr + transfer.stdout
    assert json.loads(transfer.stdout)["lm_calls"] > 0 and store.read_bytes() == before


#: Asks for as many calls as its budget allows, then returns the solution unchanged.
GREEDY_IMPROVER = """\
def improve_algorithm(initial_solution, utility, language_model):
    for _ in range(language_model.budget):
        try:
            language_model.prompt("expert", "improve this", n_responses=2)
        except Exception:
            break
    return initial_solution
"""


@pytest.mark.slow
def test_the_cost_limit_is_overshot_at_most_by_the_calls_in_flight(
    tmp_path: Path, options_for: Callable[..., RunOptions]
) -> None:
    config = tmp_path / "selftaught.toml"
    config.write_text('[prices."openai:pricey"]\ninput = 1000\noutput = 1000\n')
    workers, cap = 8, 0.06
    fake = FakeServer(lambda body: ["nothing new"] * body["n"], delay_seconds=0.5)
    with fake_server(fake) as served:
        options = replace(
            options_for(f"openai:pricey@{served.base_url}?concurrency=8"),
            profile=replace(
                TEST_PROFILE,
                meta_utility_runs=2 * workers,
                improver=ImproverBudget(language_model_calls=4, responses_per_call=2, utility_calls=1, max_tokens=64),
            ),
            max_cost_usd=cap,
            config=config,
            workers=workers,
        )
        report = api.meta_utility(options, improver=GREEDY_IMPROVER)
    with sqlite3.connect(options.store) as db:
        rows = db.execute("SELECT cost_usd, error FROM lm_calls WHERE run_id = ?", (report.run_id,)).fetchall()
    costs = [cost for cost, error in rows if error is None]
    # Calls past the limit are recorded, as refused before any request was made.
    assert all("cost limit" in error and cost == 0 for cost, error in rows if error is not None)
    one_call = max(costs)  # (11 prompt + 2 x 7 completion tokens) x $0.001 = $0.025
    overshoot = report.cost_usd - cap
    print(f"cap ${cap}, spent ${report.cost_usd:.3f} in {len(costs)} calls; overshoot ${overshoot:.3f}")
    assert one_call == pytest.approx(0.025) and report.cost_usd >= cap
    assert overshoot <= workers * one_call
    # Without the limit: 16 runs x 4 calls. With it, no call starts once the cap is reached.
    assert len(fake.requests) == len(costs) <= workers + cap / one_call
