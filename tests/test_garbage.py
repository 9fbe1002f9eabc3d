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

GARBAGE = {
    "no_code": "I would love to help, but here is only prose.",
    "syntax_error": fenced("def algorithm(:\n    return"),
    "system_exit": fenced("raise SystemExit(0)"),
    "hard_exit": fenced("import os\nos._exit(3)"),
    "huge_block": fenced("x = 1\n" * 200_000),
    "raises_when_called": fenced("def algorithm(a, b, c):\n    raise RuntimeError('boom')\n"),
    "endless_at_import": fenced("while True:\n    pass"),
    "improver_returning_a_number": fenced("def improve_algorithm(s, u, m):\n    return 42"),
    "improver_sleeping": fenced("import time\ndef improve_algorithm(s, u, m):\n    time.sleep(600)"),
    "empty": "",
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
    options = options_for(scripted_model(f"return {GARBAGE[name]!r}"), profile=FAST_PROFILE)
    report = api.run(options)
    assert [it.iteration for it in report.iterations] == [0, 1]
    assert all(0.0 <= it.meta_utility_val <= 1.0 for it in report.iterations)
    assert not report.iterations[1].accepted
    with sqlite3.connect(options.store) as db:
        status = db.execute("SELECT status FROM runs WHERE id = ?", (report.run_id,)).fetchone()[0]
        errors = db.execute(
            "SELECT COUNT(*) FROM improver_runs WHERE run_id = ? AND error IS NOT NULL", (report.run_id,)
        ).fetchone()[0]
        answered = db.execute("SELECT COUNT(*) FROM lm_calls WHERE run_id = ?", (report.run_id,)).fetchone()[0]
    assert status == "finished"
    assert errors > 0
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
