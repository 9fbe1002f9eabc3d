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
