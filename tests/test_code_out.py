"""Getting the optimized code out: the best solution of a run, `improve -o`, and sources that parse."""

from __future__ import annotations

import ast
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import STRONG_LPN_SOLUTION, ZERO_LPN_SOLUTION, fenced
from selftaught.cli.main import cli
from selftaught.loop.seed_improver import SEED_IMPROVER

SMALL_BUDGETS = [
    "--lm-calls", "1", "--responses-per-call", "2", "--utility-budget", "3",
    "--meta-utility-budget", "2", "--meta-utility-runs", "2", "--max-tokens", "64",
]  # fmt: skip


def invoke(*arguments: str) -> Result:
    return CliRunner().invoke(cli, list(arguments), catch_exceptions=False, terminal_width=300)


@pytest.fixture
def mixed_model(scripted_model: Callable[..., str]) -> str:
    """Improvers get the seed improver back; task prompts a useless solution first, a strong one second."""
    preamble = f"IMPROVER = {fenced(SEED_IMPROVER)!r}\nWEAK = {fenced(ZERO_LPN_SOLUTION)!r}\nSTRONG = {fenced(STRONG_LPN_SOLUTION)!r}\n"
    return scripted_model(
        'return IMPROVER if "def improve_algorithm" in user else (STRONG if index % 2 else WEAK)\n', preamble
    )


def validation_scores(store: Path, run_id: str) -> dict[str, float]:
    with sqlite3.connect(store) as db:
        rows = db.execute(
            "SELECT solution_hash, score, split FROM evaluations WHERE run_id = ? ORDER BY id", (run_id,)
        ).fetchall()
    return {f"{split}:{program}": score for program, score, split in rows}


@pytest.mark.slow
def test_a_run_reports_its_best_solution_in_json_text_and_show(mixed_model: str, tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    common = ["--model", mixed_model, "--store", str(store), "--iterations", "1", *SMALL_BUDGETS]
    data = json.loads(invoke("run", *common, "--json").stdout)
    best = data["best_solution"]
    assert best["source"] == STRONG_LPN_SOLUTION.strip()
    scores = validation_scores(store, data["run_id"])
    assert best["utility_val"] == max(score for key, score in scores.items() if key.startswith("validation:"))
    assert best["utility_test"] == scores[f"test:{best['hash']}"]  # scored on test, for reporting

    shown = json.loads(invoke("show", data["run_id"][:12], "--store", str(store), "--best", "--json").stdout)
    assert {key: shown[key] for key in best} == best
    source_only = invoke("show", data["run_id"], "--store", str(store), "--best", "--source-only")
    assert source_only.exit_code == 0 and source_only.stdout == best["source"] + "\n"
    ast.parse(source_only.stdout)
    text = invoke("show", data["run_id"], "--store", str(store), "--best")
    assert f"val {best['utility_val']:.3f}" in text.stdout and "from improver run" in text.stdout

    summary = invoke("run", *common)
    assert "best solution found: val 1.000" in summary.stdout
    assert "--best --source-only" in summary.stdout


@pytest.mark.slow
def test_show_source_only_writes_an_improver_that_parses_and_nothing_else(mixed_model: str, tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    run_id = json.loads(
        invoke(
            "run", "--model", mixed_model, "--store", str(store), "--iterations", "1", *SMALL_BUDGETS, "--json"
        ).stdout
    )["run_id"]
    improver = invoke("show", run_id, "--store", str(store), "--iteration", "0", "--source-only")
    assert improver.stdout == SEED_IMPROVER if SEED_IMPROVER.endswith("\n") else SEED_IMPROVER + "\n"
    ast.parse(improver.stdout)


@pytest.mark.parametrize(
    "arguments",
    [["--source-only"], ["--best", "--iteration", "1"], ["--best", "--diff"], ["--best", "--source-only", "--json"]],
)
def test_show_refuses_options_that_do_not_go_together(arguments: list[str], tmp_path: Path) -> None:
    result = invoke("show", "some-run", "--store", str(tmp_path / "none.sqlite"), *arguments)
    assert result.exit_code == 2 and "Usage" in result.stderr


@pytest.mark.slow
def test_improve_writes_the_solution_exactly_to_a_file_and_keeps_stdout_for_the_summary(
    mixed_model: str, tmp_path: Path
) -> None:
    output = tmp_path / "improved.py"
    result = invoke(
        "improve", "--model", mixed_model, "--store", str(tmp_path / "s.sqlite"), "-o", str(output), *SMALL_BUDGETS
    )
    assert result.exit_code == 0, result.stderr
    assert output.read_text() == STRONG_LPN_SOLUTION.strip() + "\n"
    ast.parse(output.read_text())
    assert "def algorithm" not in result.stdout and "utility val 1.000" in result.stdout
    assert f"written to {output}" in result.stderr


@pytest.mark.slow
def test_improve_warns_when_the_solution_it_returns_scores_below_the_initial_one(
    scripted_model: Callable[..., str], tmp_path: Path
) -> None:
    weak_model = scripted_model(f"return {fenced(ZERO_LPN_SOLUTION)!r}\n")
    initial = tmp_path / "strong.py"
    initial.write_text(STRONG_LPN_SOLUTION)
    arguments = [
        "--model",
        weak_model,
        "--store",
        str(tmp_path / "s.sqlite"),
        "--solution",
        str(initial),
        *SMALL_BUDGETS,
    ]
    result = invoke("improve", *arguments)
    assert result.exit_code == 0, result.stderr
    assert "on validation, below the initial solution's 1.000" in (result.stderr)
    strong_model = scripted_model(f"return {fenced(STRONG_LPN_SOLUTION)!r}\n")
    better = invoke("improve", "--model", strong_model, "--store", str(tmp_path / "t.sqlite"), *SMALL_BUDGETS)
    assert better.exit_code == 0 and "warning" not in better.stderr


@pytest.mark.parametrize("asked", [False, True])
def test_a_solution_of_runs_started_ahead_is_the_runs_best_only_once_its_candidate_was_asked_about(
    asked: bool, tmp_path: Path
) -> None:
    """Runs started ahead (`--speculate`) are marked so when they start: an attempt stopped before it could
    say which were never asked about must not report what they found."""
    from selftaught.store.reading import StoreReader
    from selftaught.store.run_store import RunStore
    from selftaught.tasks.evaluation import Evaluation

    store = RunStore(tmp_path / "s.sqlite")
    run_id = store.create_run(command="run", task="parity_noise", model="m", seed=0, config={}, options={})

    def evaluated(purpose: str, solution: str, score: float) -> int:
        improver_run = store.start_improver_run(
            run_id, purpose=purpose, improver="def improve_algorithm(): pass", initial_solution="", parent_id=None
        )
        evaluation = Evaluation(task="parity_noise", split="validation", score=score, instances=1)
        store.record_evaluation(run_id, improver_run, solution, evaluation.as_row())
        return improver_run

    evaluated("meta-utility", "def algorithm(): return 1", 0.5)
    ahead = evaluated("speculative meta-utility", "def algorithm(): return 2", 1.0)
    if asked:
        store.record_event(run_id, None, "speculation_asked", {"improver_run_ids": [ahead]})
    store.close()
    with StoreReader(tmp_path / "s.sqlite") as reader:
        best = reader.best_solution(run_id)
    assert best is not None
    assert (best["utility_val"], best["source"]) == (
        (1.0, "def algorithm(): return 2") if asked else (0.5, "def algorithm(): return 1")
    )


def test_source_only_into_a_file_is_the_program_that_was_scored_even_with_control_characters(tmp_path: Path) -> None:
    """Escaping would change it: inside a raw string an escape is four characters, not ESC."""
    from selftaught.store.run_store import RunStore
    from selftaught.tasks.evaluation import Evaluation

    source = "MARK = r'\x1b[31m'\n\ndef algorithm(values):\n    return len(MARK)\n"
    store = RunStore(tmp_path / "s.sqlite")
    run_id = store.create_run(command="run", task="parity_noise", model="m", seed=0, config={}, options={})
    store.record_evaluation(
        run_id, None, source, Evaluation(task="parity_noise", split="validation", score=1.0, instances=1).as_row()
    )
    store.close()
    saved = invoke("show", run_id, "--store", str(tmp_path / "s.sqlite"), "--best", "--source-only")
    assert saved.stdout == source
    shown = invoke("show", run_id, "--store", str(tmp_path / "s.sqlite"), "--best")
    assert "\x1b" not in shown.stdout  # shown with its header: for a person, escaped
