"""Whatever the model answers, the run goes on: every failure is recorded on the candidate that caused it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace

import pytest

from conftest import TEST_PROFILE, fenced
from selftaught import api
from selftaught.api import RunOptions
from selftaught.config import ImproverBudget

pytestmark = pytest.mark.slow  # each case is a whole run

NO_IMPROVER = "the improver returned None (did any response contain a code block?)"
NO_ALGORITHM = "NameError: the code defines no function named 'algorithm'"
NO_IMPROVE_ALGORITHM = "the improver failed: NameError: the code defines no function named 'improve_algorithm'"

#: Each answer, the error recorded on an improver run given it, and what an evaluation of it records
#: (its failure or first problem; None when there is no program to evaluate).
GARBAGE: dict[str, tuple[str, str, str | None]] = {
    "no_code": ("I would love to help, but here is only prose.", NO_IMPROVER, None),
    "syntax_error": (
        fenced("def algorithm(:\n    return"),
        "the improver failed: SyntaxError: invalid syntax (line 1)",
        "SyntaxError: invalid syntax (line 1)",
    ),
    "system_exit": (
        fenced("raise SystemExit(0)"),
        "the improver failed: SystemExit: 0 (line 1)",
        "SystemExit: 0 (line 1)",
    ),
    "hard_exit": (
        fenced("import os\nos._exit(3)"),
        "the improver failed: exited without a result (exit code 3)",
        "exited without a result (exit code 3)",
    ),
    # Past the 200,000 characters a program may have: scored 0 unrun, and returned it fails the improver.
    # (Within the 256,000 characters a response to a short max_tokens is kept to.)
    "huge_block": (
        fenced("x = 1\n" * 40_000),
        "the improver returned 239999 characters; a program may have at most 200000",
        None,
    ),
    "raises_when_called": (
        fenced("def algorithm(a, b, c):\n    raise RuntimeError('boom')\n"),
        NO_IMPROVE_ALGORITHM,
        "instance 0: RuntimeError: boom (line 2)",
    ),
    "endless_at_import": (
        fenced("while True:\n    pass"),
        "the improver failed: timed out",
        "TimeoutError: loading the solution took longer than 2 s",
    ),
    "improver_returning_a_number": (
        fenced("def improve_algorithm(s, u, m):\n    return 42"),
        "the improver returned a int, not a program",
        NO_ALGORITHM,
    ),
    "improver_sleeping": (
        fenced("import time\ndef improve_algorithm(s, u, m):\n    time.sleep(600)"),
        "the improver failed: timed out",
        NO_ALGORITHM,
    ),
    "empty": ("", NO_IMPROVER, None),
}

FAST_PROFILE = replace(
    TEST_PROFILE,
    improver=ImproverBudget(
        language_model_calls=2, responses_per_call=2, utility_calls=3, max_tokens=64, own_seconds=3
    ),
)


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_leaves_the_loop_alive(
    name: str, scripted_model: Callable[..., str], options_for: Callable[..., RunOptions]
) -> None:
    answer, improver_error, evaluation_problem = GARBAGE[name]
    options = options_for(scripted_model(f"return {answer!r}"), profile=FAST_PROFILE)
    report = api.run(options)
    assert [it.iteration for it in report.iterations] == [0, 1]
    # Every improver, the seed's included, ends up with nothing that scores: exactly 0, never a guess.
    assert [it.meta_utility_val for it in report.iterations] == [0.0, 0.0]
    assert not report.iterations[1].accepted
    with sqlite3.connect(options.store) as db:
        status = db.execute("SELECT status FROM runs WHERE id = ?", (report.run_id,)).fetchone()[0]
        errors = {
            error
            for (error,) in db.execute(
                "SELECT error FROM improver_runs WHERE run_id = ? AND error IS NOT NULL", (report.run_id,)
            )
        }
        evaluations = db.execute(
            "SELECT score, failure, problem FROM evaluations WHERE run_id = ?", (report.run_id,)
        ).fetchall()
        answered = db.execute("SELECT COUNT(*) FROM lm_calls WHERE run_id = ?", (report.run_id,)).fetchone()[0]
    assert status == "finished"
    assert improver_error in errors, errors
    if evaluation_problem is None:
        assert evaluations == []
    else:
        assert evaluations and all(score == 0.0 for score, _, _ in evaluations)
        assert evaluation_problem in {text for _, failure, problem in evaluations for text in (failure, problem)}
    assert answered > 0


def test_a_failing_backend_is_an_error_of_the_improver_run(
    scripted_model: Callable[..., str], options_for: Callable[..., RunOptions]
) -> None:
    options = options_for(scripted_model("raise ConnectionError('server down')"))
    result = api.improve(options)
    assert result.algorithm is None
    assert "scripted model raised ConnectionError: server down" in (result.error or "")
    with sqlite3.connect(options.store) as db:
        recorded = db.execute("SELECT error FROM lm_calls WHERE run_id = ?", (result.run_id,)).fetchall()
    assert recorded and "server down" in recorded[0][0]
