"""The command line: JSON output of each command, and one clear line for every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import STRONG_LPN_SOLUTION, responder_returning
from selftaught.cli.main import cli

SMALL_BUDGETS = [
    "--lm-calls", "1", "--responses-per-call", "2", "--utility-budget", "3",
    "--meta-utility-budget", "2", "--meta-utility-runs", "2", "--max-tokens", "64",
]  # fmt: skip


def invoke(*arguments: str) -> Result:
    return CliRunner().invoke(cli, list(arguments), catch_exceptions=False)


@pytest.fixture
def strong_model(scripted_model: Callable[..., str]) -> str:
    return scripted_model(*responder_returning(STRONG_LPN_SOLUTION))


@pytest.mark.slow
def test_improve_json(strong_model: str, tmp_path: Path) -> None:
    result = invoke("improve", "--model", strong_model, "--store", str(tmp_path / "s.sqlite"), "--json", *SMALL_BUDGETS)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["algorithm"] == STRONG_LPN_SOLUTION.strip()
    assert data["utility_val"] > 0.95 and data["utility_test"] > 0.95
    assert (data["lm_calls"], data["lm_responses"], data["utility_calls"]) == (1, 2, 2)


@pytest.mark.slow
def test_meta_utility_json(strong_model: str, tmp_path: Path) -> None:
    result = invoke(
        "meta-utility", "--model", strong_model, "--store", str(tmp_path / "s.sqlite"), "--json", *SMALL_BUDGETS
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["meta_utility_val"] > 0.95 and data["meta_utility_test"] > 0.95
    assert len(data["runs"]) == 2
    assert set(data["runs"][0]) >= {"utility_val", "lm_calls", "utility_calls", "error"}


@pytest.mark.slow
def test_run_json_and_table(strong_model: str, tmp_path: Path) -> None:
    store = str(tmp_path / "s.sqlite")
    result = invoke("run", "--model", strong_model, "--store", store, "--iterations", "1", "--json", *SMALL_BUDGETS)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["run_id"] and [it["iteration"] for it in data["iterations"]] == [0, 1]
    assert {"meta_utility_val", "meta_utility_test"} <= set(data["iterations"][0])
    table = invoke("run", "--model", strong_model, "--store", store, "--iterations", "1", *SMALL_BUDGETS)
    assert table.exit_code == 0
    assert "meta-utility per iteration" in table.stdout and "seed" in table.stdout


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "expected_code", "message"),
    [
        ("missing_improver", 2, "no such file"),
        ("syntax_error_improver", 2, "syntax error at line 2"),
        ("improver_without_entry_point", 2, "defines no function improve_algorithm()"),
        ("raising_improver", 1, "the improver failed: RuntimeError: boom (line 2)"),
        ("model_without_code", 1, "the improver returned None"),
        ("unknown_model_spec", 2, "unknown model spec 'gpt-9'"),
        ("unknown_backend", 2, "unknown model spec 'nope:x'"),
        ("missing_scripted_file", 2, "scripted model file not found"),
        ("unknown_task", 2, "unknown task 'no_such_task'"),
        ("openai_without_key", 2, "OPENAI_API_KEY is not set"),
        ("fractional_concurrency", 2, "option concurrency needs a whole number of at least 1, not '0.5'"),
    ],
)
def test_bad_input_gives_one_clear_line(
    case: str,
    expected_code: int,
    message: str,
    tmp_path: Path,
    scripted_model: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    prose = scripted_model("return 'Sorry, no code today.'")
    arguments = {
        "missing_improver": ["--improver", str(tmp_path / "nothere.py")],
        "syntax_error_improver": [
            "--improver",
            write(tmp_path, "bad.py", "def improve_algorithm(a, b, c):\n    return (\n"),
        ],
        "improver_without_entry_point": ["--improver", write(tmp_path, "none.py", "x = 1\n")],
        "raising_improver": [
            "--improver",
            write(tmp_path, "raise.py", "def improve_algorithm(a, b, c):\n    raise RuntimeError('boom')\n"),
        ],
        "model_without_code": [],
        "unknown_model_spec": ["--model", "gpt-9"],
        "unknown_backend": ["--model", "nope:x"],
        "missing_scripted_file": ["--model", f"scripted:{tmp_path / 'nothere.py'}"],
        "unknown_task": ["--task", "no_such_task"],
        "openai_without_key": ["--model", "openai:gpt-4o"],
        "fractional_concurrency": ["--model", "openai:fake@http://127.0.0.1:9/v1?concurrency=0.5"],
    }[case]
    if "--model" not in arguments:
        arguments += ["--model", prose]
    result = invoke("improve", "--store", str(tmp_path / "s.sqlite"), *SMALL_BUDGETS, *arguments)
    assert result.exit_code == expected_code
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
def test_the_installed_command_runs_and_explains_itself() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "selftaught", "run", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--task", "--iterations", "--model", "--profile", "--seed", "--store", "--json"):
        assert flag in help_text
    models = subprocess.run(
        [sys.executable, "-m", "selftaught", "models", "--json"], capture_output=True, text=True, check=True
    ).stdout
    assert {entry["prefix"] for entry in json.loads(models)} == {"anthropic", "llamacpp", "openai", "scripted"}


@pytest.mark.slow
def test_models_check_says_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    from fake_servers import FakeServer, fake_server

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with fake_server(FakeServer(lambda body: ["ok"] * body["n"])) as fake:
        working = invoke("models", "--check", f"openai:m@{fake.base_url}", "--json")
    with fake_server(FakeServer(lambda body: [], status=404)) as fake:
        unknown = invoke("models", "--check", f"openai:no-such-model@{fake.base_url}")
    no_key = invoke("models", "--check", "openai:gpt-4o")
    assert working.exit_code == 0 and json.loads(working.stdout)["answer"] == "ok"
    assert unknown.exit_code == 1 and "HTTP 404" in unknown.stdout
    assert no_key.exit_code == 1 and "OPENAI_API_KEY is not set" in no_key.stdout


def test_tasks_lists_the_built_in_tasks() -> None:
    listed = invoke("tasks", "--json")
    assert listed.exit_code == 0
    tasks = {task["name"]: task for task in json.loads(listed.stdout)}
    assert set(tasks) == {
        "parity_noise", "parity_noiseless", "str_grid_dist", "modified_quadratic_assignment", "three_sat", "maxcut",
    }  # fmt: skip
    assert tasks["parity_noise"]["validation_instances"] == 20 and tasks["parity_noise"]["test_instances"] == 50
