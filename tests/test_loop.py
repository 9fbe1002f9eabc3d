"""The improver, the meta-utility and the self-improvement loop, driven by scripted models."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace

import pytest

from conftest import STRONG_LPN_SOLUTION, TEST_PROFILE, ZERO_LPN_SOLUTION, fenced, responder_returning
from selftaught import api
from selftaught.api import RunOptions

pytestmark = pytest.mark.slow  # each case is a whole run of the loop

#: An improver that ignores the language model and returns the strong LPN solution.
SHORTCUT_IMPROVER = f"""\
STRONG = {STRONG_LPN_SOLUTION!r}

def improve_algorithm(initial_solution, utility, language_model):
    return STRONG
"""


def test_a_strong_responder_lifts_the_utility_well_above_the_seed(
    scripted_model: Callable[..., str], options_for: Callable[..., RunOptions]
) -> None:
    body, preamble = responder_returning(STRONG_LPN_SOLUTION)
    result = api.improve(options_for(scripted_model(body, preamble)))
    assert result.error is None and result.algorithm == STRONG_LPN_SOLUTION.strip()
    assert result.initial_utility_val < 0.65
    assert result.utility_val > 0.95 and result.utility_test > 0.95
    # The seed improver asks for min(max_responses_per_call, utility.budget) responses in one call.
    assert (result.lm_calls, result.lm_responses, result.utility_calls) == (1, 2, 2)


def test_meta_utility_averages_fresh_runs(
    scripted_model: Callable[..., str], options_for: Callable[..., RunOptions]
) -> None:
    body, preamble = responder_returning(STRONG_LPN_SOLUTION)
    report = api.meta_utility(options_for(scripted_model(body, preamble)))
    assert len(report.runs) == 2
    assert all(run["lm_calls"] == 1 and run["utility_calls"] == 2 and run["error"] is None for run in report.runs)
    assert report.meta_utility_val > 0.95 and report.meta_utility_test > 0.95


def test_the_loop_keeps_a_better_improver_and_rejects_a_worse_one(
    scripted_model: Callable[..., str], options_for: Callable[..., RunOptions]
) -> None:
    # Task prompts get a ~50% solution; improver prompts get an improver that returns the strong one.
    body, preamble = responder_returning(ZERO_LPN_SOLUTION, SHORTCUT_IMPROVER)
    options = options_for(scripted_model(body, preamble), profile=replace(TEST_PROFILE, iterations=2))
    report = api.run(options)
    seed, first, second = report.iterations
    assert 0.3 < seed.meta_utility_val < 0.7
    assert first.accepted and first.meta_utility_val > 0.95 and first.improver == SHORTCUT_IMPROVER.strip()
    # Iteration 2 runs the shortcut improver on itself: it returns an LPN solution, not an improver.
    assert not second.accepted and second.candidate_val == 0.0
    assert second.improver == SHORTCUT_IMPROVER.strip() and second.meta_utility_val == first.meta_utility_val
    assert "improve_algorithm" in (second.error or "")
    with sqlite3.connect(options.store) as db:
        rows = db.execute(
            "SELECT iteration, accepted, meta_utility_val FROM iterations WHERE run_id = ? ORDER BY iteration",
            (report.run_id,),
        ).fetchall()
        status = db.execute("SELECT status FROM runs WHERE id = ?", (report.run_id,)).fetchone()[0]
        lineage = db.execute(
            "SELECT COUNT(*) FROM improver_runs WHERE run_id = ? AND purpose = 'meta-utility' AND parent_id IS NOT NULL",
            (report.run_id,),
        ).fetchone()[0]
    assert [(r[0], r[1]) for r in rows] == [(0, 1), (1, 1), (2, 0)]
    assert status == "finished"
    assert lineage > 0  # meta-utility runs made while scoring candidates point at the step that made them


def test_an_equal_candidate_is_not_kept(
    scripted_model: Callable[..., str], options_for: Callable[..., RunOptions]
) -> None:
    # The seed improver rewrites itself into a copy of itself: same meta-utility, so it is rejected.
    from selftaught.loop.seed_improver import SEED_IMPROVER

    body, preamble = responder_returning(ZERO_LPN_SOLUTION, SEED_IMPROVER)
    report = api.run(options_for(scripted_model(body, preamble)))
    seed, first = report.iterations
    assert first.candidate_val == pytest.approx(seed.meta_utility_val)
    assert not first.accepted


def test_the_same_seed_gives_the_same_run(
    scripted_model: Callable[..., str], options_for: Callable[..., RunOptions]
) -> None:
    random_solution = "import numpy as np\ndef algorithm(a, b, c):\n    return np.random.binomial(1, 0.5, len(c))\n"
    model = scripted_model(f"return {fenced(random_solution)!r}")
    first = api.meta_utility(options_for(model, seed=3))
    second = api.meta_utility(options_for(model, seed=3))
    other = api.meta_utility(options_for(model, seed=4))
    assert first.meta_utility_val == second.meta_utility_val
    assert first.meta_utility_test == second.meta_utility_test
    assert (first.meta_utility_val, first.meta_utility_test) != (other.meta_utility_val, other.meta_utility_test)
