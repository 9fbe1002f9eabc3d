"""`--speculate`: candidates scored as soon as they are proposed give the same results, sooner, with the unasked counted apart."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import TEST_PROFILE, ZERO_LPN_SOLUTION
from fake_servers import FakeServer, fake_server
from selftaught import api
from selftaught.api import RunOptions
from selftaught.config import ImproverBudget
from selftaught.loop.estimate import estimate_run
from selftaught.loop.limits import MAX_IMPROVER_RUNS_VARIABLE
from selftaught.loop.seed_improver import SEED_IMPROVER

pytestmark = pytest.mark.slow  # each case is a whole run

#: Asks for three candidates but scores only the first: the other two are what speculation pays for in vain.
FIRST_ONLY_IMPROVER = SEED_IMPROVER.replace(
    "best_solution = max(new_solutions, key=utility)",
    "best_solution = new_solutions[0]\n    utility(best_solution)",
)
BRUTE_FORCE = """\
import itertools
import numpy as np

MASKS = np.array(list(itertools.product([0, 1], repeat=10)))

def algorithm(train_samples, train_parity, test_samples):
    errors = ((train_samples @ MASKS.T) % 2 != train_parity[:, None]).sum(axis=0)
    return (test_samples @ MASKS[np.argmin(errors)]) % 2
"""
#: Answers by the request's seed, never by order: improvers when asked to improve one, else LPN solutions.
RESPONDER = f"""
IMPROVERS = [{SEED_IMPROVER!r}, {FIRST_ONLY_IMPROVER!r}, {SEED_IMPROVER.replace("Improves a", "Improves, carefully, a")!r}]
SOLUTIONS = [{ZERO_LPN_SOLUTION!r}, {BRUTE_FORCE!r}, "def algorithm(a, b, c):\\n    return [1] * len(c)\\n"]

def respond(system, user, temperature, index, seed):
    chosen = (IMPROVERS if "meta_utility" in user else SOLUTIONS)[seed % 3]
    return "An idea.\\n```python\\n" + chosen + "\\n```\\n"
"""
PROFILE = replace(
    TEST_PROFILE,
    iterations=2,
    meta_utility_runs=2,
    meta_utility_calls=3,
    improver=ImproverBudget(language_model_calls=1, responses_per_call=3, utility_calls=3, max_tokens=64),
)


def run(tmp_path: Path, speculate: bool, name: str, workers: int = 2) -> api.RunReport:
    responder = tmp_path / "responder.py"
    responder.write_text(RESPONDER)
    options = RunOptions(
        task="parity_noise",
        model=f"scripted:{responder}",
        profile=PROFILE,
        seed=7,
        store=tmp_path / f"{name}.sqlite",
        workers=workers,
        speculate=speculate,
    )
    return api.run(options, improver=FIRST_ONLY_IMPROVER)


def test_speculation_changes_no_result_and_counts_what_the_improver_never_asked_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, speculated = run(tmp_path, False, "plain"), run(tmp_path, True, "speculated")
    monkeypatch.setenv(MAX_IMPROVER_RUNS_VARIABLE, "1")
    one_at_a_time = run(tmp_path, False, "one-at-a-time", workers=1)
    # The same iterations (only the store's numbering of improver runs differs: speculation made more of them),
    # and the same as with one improver run and one evaluation at a time.
    assert (
        [replace(it, improver_run_id=None) for it in plain.iterations]
        == [replace(it, improver_run_id=None) for it in speculated.iterations]
        == [replace(it, improver_run_id=None) for it in one_at_a_time.iterations]
    )
    assert len({it.meta_utility_val for it in plain.iterations} | {it.candidate_val for it in plain.iterations}) > 2
    # The best solution too: what unasked candidates' runs found is not the run's to report.
    assert plain.best_solution is not None and speculated.best_solution is not None
    assert (plain.best_solution.hash, plain.best_solution.utility_val, plain.best_solution.utility_test) == (
        speculated.best_solution.hash,
        speculated.best_solution.utility_val,
        speculated.best_solution.utility_test,
    )
    assert (plain.speculative_calls, plain.speculative_cost_usd) == (0, 0.0)
    # Two unasked candidates an iteration, each scored by two improver runs of one call.
    assert speculated.speculative_calls == 2 * 2 * 1 * PROFILE.iterations
    with sqlite3.connect(tmp_path / "speculated.sqlite") as db:
        events = db.execute("SELECT detail FROM events WHERE kind = 'speculation'").fetchall()
        status, result = db.execute("SELECT status, result FROM runs").fetchone()
    assert len(events) == PROFILE.iterations and status == "finished"
    assert '"speculative_calls": 8' in result


def test_speculation_puts_every_candidates_runs_in_flight_at_once(
    tmp_path: Path, options_for: Callable[..., RunOptions]
) -> None:
    improver = SEED_IMPROVER.replace("Improves a", "Improves, again, a")

    def answer(body: dict[str, object]) -> list[str]:
        prompt = str(body["messages"][-1]["content"])  # type: ignore[index]
        count = int(body.get("n", 1))  # type: ignore[call-overload]
        if "meta_utility" not in prompt:
            return [f"An idea.\n```python\n{ZERO_LPN_SOLUTION}\n```\n"] * count
        return [f"Idea {i}.\n```python\n{improver.replace('again', f'again ({i})')}\n```\n" for i in range(count)]

    profile = replace(PROFILE, iterations=1)
    in_flight = {}
    for speculate in (False, True):
        with fake_server(FakeServer(answer, delay_seconds=0.4)) as fake:
            options = replace(
                options_for(f"openai:m@{fake.base_url}?concurrency=16"), profile=profile, speculate=speculate
            )
            api.run(options)
            in_flight[speculate] = fake.most_in_flight
    # Without it a candidate's two runs at a time; with it the three candidates' six at once.
    assert in_flight == {False: 2, True: 6}


def scripted(tmp_path: Path, body: str) -> str:
    responder = tmp_path / "answers.py"
    responder.write_text(body)
    return f"scripted:{responder}"


def test_speculation_never_runs_a_program_longer_than_a_program_may_be(tmp_path: Path) -> None:
    """Such a program scores 0 unrun and unstored when asked about; proposed, it is not scored ahead either."""
    long_improver = SEED_IMPROVER + "\n# " + "x" * 250_000 + "\n"
    model = scripted(
        tmp_path,
        f"LONG = {long_improver!r}\nSOLUTION = {ZERO_LPN_SOLUTION!r}\n"
        "def respond(system, user, temperature, index, seed):\n"
        "    return '```python\\n' + (LONG if 'meta_utility' in user else SOLUTION) + '\\n```'\n",
    )
    options = RunOptions(
        model=model, profile=replace(PROFILE, iterations=1), store=tmp_path / "s.sqlite", speculate=True
    )
    report = api.run(options)
    assert report.speculative_calls == 0
    with sqlite3.connect(options.store) as db:
        longest = db.execute("SELECT MAX(LENGTH(source)) FROM programs").fetchone()[0]
    assert longest < 200_000


def test_a_lone_surrogate_in_an_answer_is_an_answer_not_a_crash(tmp_path: Path) -> None:
    model = scripted(
        tmp_path,
        f"SOLUTION = {ZERO_LPN_SOLUTION!r}\n"
        "def respond(system, user, temperature, index, seed):\n"
        "    return 'An idea \\ud800.\\n```python\\n' + SOLUTION + '\\n```'\n",
    )
    result = api.improve(RunOptions(model=model, profile=PROFILE, store=tmp_path / "s.sqlite"))
    assert result.algorithm is not None and result.error is None
    with fake_server(
        FakeServer(lambda body: ["An idea \ud800.\n```python\n" + ZERO_LPN_SOLUTION + "```"] * body["n"])
    ) as fake:
        served = api.improve(
            RunOptions(model=f"openai:m@{fake.base_url}", profile=PROFILE, store=tmp_path / "s.sqlite")
        )
    assert served.algorithm is not None and served.error is None


def test_the_worst_case_counts_what_speculation_may_pay_for_in_vain(tmp_path: Path) -> None:
    options = RunOptions(model=scripted(tmp_path, RESPONDER), profile=PROFILE, store=tmp_path / "s.sqlite")
    plain = estimate_run(options, FIRST_ONLY_IMPROVER)
    speculated = estimate_run(replace(options, speculate=True), FIRST_ONLY_IMPROVER)
    runs, calls = PROFILE.meta_utility_runs, PROFILE.improver.language_model_calls
    assert speculated.lm_calls - plain.lm_calls == PROFILE.iterations * PROFILE.meta_utility_calls * runs * calls
    assert run(tmp_path, True, "bounded").speculative_calls > 0  # and a run stays within it:
    assert api.run(replace(options, speculate=True, store=tmp_path / "b.sqlite"), FIRST_ONLY_IMPROVER).iterations


def test_speculation_with_no_meta_utility_budget_runs(tmp_path: Path) -> None:
    options = RunOptions(
        model=scripted(tmp_path, RESPONDER),
        profile=replace(PROFILE, iterations=1, meta_utility_calls=0),
        store=tmp_path / "s.sqlite",
        speculate=True,
    )
    assert api.run(options, FIRST_ONLY_IMPROVER).speculative_calls == 0


def test_a_lone_surrogate_in_a_servers_error_is_a_recorded_error_not_a_crash(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    with fake_server(FakeServer(lambda body: ["x"], status=400, error_message="bad \ud800 request")) as fake:
        result = api.improve(RunOptions(model=f"openai:m@{fake.base_url}", profile=PROFILE, store=store))
    assert result.algorithm is None and result.error is not None
    with sqlite3.connect(store) as db:
        errors = [row[0] for row in db.execute("SELECT error FROM lm_calls")]
    assert errors and all("HTTP 400" in error and "bad" in error for error in errors)
