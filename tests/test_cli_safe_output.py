"""Hostile generated text through the real commands: shown with its controls visible, never obeyed or parsed."""

from __future__ import annotations

import ast
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from selftaught.cli import doctor_command
from selftaught.cli.main import _WarningLine, cli
from selftaught.cli.safe_output import visible_controls
from selftaught.sandbox.doctor import SandboxReport

#: Set the terminal title, clear the screen, reverse the text that follows, plant a link.
NOTE = "\x1b]0;pwned\x07\x1b[2J\u202e\u2066[link=javascript:alert(1)]x[/link]"
NOTE_SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\u202e\\u2066[link=javascript:alert(1)]x[/link]"
RAW = ("\x1b", "\x07", "\u202e", "\u2066")
EXAMPLE_TASK = Path(__file__).resolve().parent.parent / "examples" / "tsp"

# The characters are written into the files as they are, not as escapes.
IMPROVER = f'''\
from helpers import extract_code

NOTE = "{NOTE}"
Hostile = type("X[/bogus]", (Exception,), {{}})


def improve_algorithm(initial_solution, utility, language_model):
    if NOTE in initial_solution:  # asked to improve itself
        raise Hostile(NOTE)
    responses = language_model.batch_prompt("expert", ["Improve:\\n" + initial_solution], 0.7)
    candidates = [code for code in extract_code(responses) if code]
    for candidate in candidates:
        utility(candidate)
    return candidates[0] if candidates else initial_solution
'''

#: Its first instance raises, the others return invalid outputs: the audit flags it and shows the first problem.
SOLUTION = f'''\
NOTE = "{NOTE}"
Hostile = type("X[/bogus]", (Exception,), {{}})
CALLS = []


def algorithm(train_samples, train_parity, test_samples):
    CALLS.append(1)
    if len(CALLS) == 1:
        raise Hostile(NOTE)
    return [None] * len(test_samples)
'''

BUDGETS = [
    "--lm-calls", "1", "--responses-per-call", "1", "--utility-budget", "2",
    "--meta-utility-runs", "1", "--meta-utility-budget", "1",
]  # fmt: skip


def invoke(*arguments: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(arguments), catch_exceptions=False, env=env)


def assert_shown_not_obeyed(result: Result, *expected: str) -> None:
    printed = result.stdout + result.stderr
    for raw in RAW:
        assert raw not in printed, f"{raw!r} reached the terminal:\n{printed}"
    for text in expected:
        assert text in printed, f"{text!r} is not in:\n{printed}"
    assert "Traceback" not in printed and "MarkupError" not in printed


@pytest.fixture
def hostile_model(scripted_model: Callable[..., str]) -> str:
    preamble = f"ANSWER = {'Here ' + NOTE + ' is my idea.' + chr(10) + '```python' + chr(10) + SOLUTION + '```'!r}\n"
    return scripted_model("return ANSWER\n", preamble)


@pytest.fixture
def improver_file(tmp_path: Path) -> str:
    path = tmp_path / "hostile_improver.py"
    path.write_text(IMPROVER)
    assert "\x1b]0;pwned\x07" in path.read_text()
    return str(path)


def only_run_id(store: Path) -> str:
    runs = json.loads(invoke("runs", "--store", str(store), "--json").stdout)
    assert len(runs) == 1
    return str(runs[0]["id"])


@pytest.mark.slow
def test_improve_and_audit_show_a_hostile_solution_and_its_errors(
    hostile_model: str, improver_file: str, tmp_path: Path
) -> None:
    store = tmp_path / "improve.sqlite"
    improved = invoke("improve", "--model", hostile_model, "--improver", improver_file, "--store", str(store), *BUDGETS)
    assert improved.exit_code == 0, improved.output
    assert_shown_not_obeyed(improved, f'NOTE = "{NOTE_SHOWN}"', 'type("X[/bogus]", (Exception,), {})')
    run_id = only_run_id(store)
    listed = invoke("runs", "--store", str(store))
    assert_shown_not_obeyed(listed, run_id)

    # The improver raised X[/bogus] with NOTE in the child: rich used to stop on the stray closing tag.
    audited = invoke("audit", run_id, "--store", str(store))
    assert audited.exit_code == 0, audited.output
    assert_shown_not_obeyed(audited, "invalid_outputs", "instance 0: X[/bogus]:", "\\x1b]0;pwned\\x07")

    # JSON is data: the exact characters, escaped only by JSON itself.
    as_json = json.loads(invoke("audit", run_id, "--store", str(store), "--json").stdout)
    details = [flag["detail"] for program in as_json["solutions"] for flag in program["reward_hacking"]]
    assert any(NOTE in detail for detail in details), details
    improved_json = json.loads(
        invoke("improve", "--model", hostile_model, "--improver", improver_file, "--store", str(store), "--json",
               *BUDGETS).stdout
    )  # fmt: skip
    assert improved_json["algorithm"] == SOLUTION.strip()


@pytest.fixture
def hostile_run(hostile_model: str, improver_file: str, tmp_path: Path) -> tuple[Path, str, Result]:
    store = tmp_path / "run.sqlite"
    ran = invoke(
        "run", "--model", hostile_model, "--improver", improver_file, "--store", str(store), "--iterations", "1",
        *BUDGETS,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    return store, only_run_id(store), ran


@pytest.mark.slow
def test_run_prints_the_iteration_error_visibly(hostile_run: tuple[Path, str, Result]) -> None:
    _, run_id, ran = hostile_run
    assert_shown_not_obeyed(ran, f"iteration 1: no candidate: the improver failed: X[/bogus]: {NOTE_SHOWN}", run_id)


@pytest.mark.slow
def test_show_prints_the_source_faithfully_but_for_control_characters(hostile_run: tuple[Path, str, Result]) -> None:
    store, run_id, _ = hostile_run
    shown = invoke("show", run_id, "--store", str(store), "--iteration", "0")
    assert shown.exit_code == 0
    assert_shown_not_obeyed(shown, f'NOTE = "{NOTE_SHOWN}"')
    source = shown.stdout[shown.stdout.index("from helpers") :]
    assert source.strip() == visible_controls(IMPROVER).strip()
    # Still Python, and the escaped literal still holds the very characters that were written.
    assignment = ast.parse(source).body[1]
    assert isinstance(assignment, ast.Assign) and ast.literal_eval(assignment.value) == NOTE

    failed = invoke("show", run_id, "--store", str(store), "--iteration", "1")
    assert_shown_not_obeyed(failed, f"error: no candidate: the improver failed: X[/bogus]: {NOTE_SHOWN}")
    diff = invoke("show", run_id, "--store", str(store), "--iteration", "1", "--diff")
    assert_shown_not_obeyed(diff, f'-NOTE = "{NOTE_SHOWN}"')
    summary = invoke("show", run_id, "--store", str(store))
    assert_shown_not_obeyed(summary, "meta-utility per iteration")

    exact = json.loads(invoke("show", run_id, "--store", str(store), "--iteration", "0", "--json").stdout)
    assert exact["source"].strip() == IMPROVER.strip()


def test_models_check_prints_a_hostile_answer_visibly(hostile_model: str) -> None:
    checked = invoke("models", "--check", hostile_model)
    assert checked.exit_code == 0
    assert_shown_not_obeyed(checked, "X[/bogus]", "[link=javascript:alert(1)]x[/link]", "\\x1b]0;pwned")


def test_error_lines_show_control_characters_of_the_error_text(
    hostile_model: str, improver_file: str, tmp_path: Path
) -> None:
    # A solution holding NOTE makes the improver raise: `improve` ends with the child's error text.
    solution = tmp_path / "hostile_solution.py"
    solution.write_text(SOLUTION)
    common = ["--model", hostile_model, "--store", str(tmp_path / "s.sqlite"), *BUDGETS]
    failed = invoke("improve", "--improver", improver_file, "--solution", str(solution), *common)
    assert failed.exit_code == 1
    assert_shown_not_obeyed(failed, f"error: the improver failed: X[/bogus]: {NOTE_SHOWN}")

    # A SelftaughtError quoting a task folder's own text: the `error:` line of bad input.
    folder = tmp_path / "hostile_task"
    shutil.copytree(EXAMPLE_TASK, folder)
    # TOML forbids raw control characters, so its own escapes put them in the key.
    (folder / "task.toml").write_text('"X[/bogus]\\u001b]0;pwned\\u0007\\u202e" = 1\n')
    refused = invoke("improve", "--task", str(folder), *common)
    assert refused.exit_code == 2
    assert_shown_not_obeyed(refused, "error:", "unknown settings X[/bogus]\\x1b]0;pwned\\x07\\u202e")


def test_tasks_check_shows_what_a_user_task_raised(tmp_path: Path) -> None:
    folder = tmp_path / "hostile_task"
    shutil.copytree(EXAMPLE_TASK, folder)
    (folder / "task.py").write_text(
        f'DESCRIPTION = "d"\nHostile = type("X[/bogus]", (Exception,), {{}})\n\n\n'
        f'def make_instance(seed):\n    raise Hostile("{NOTE}")\n\n\ndef score(arguments, answer, output):\n    return 1.0\n'
    )
    checked = invoke("tasks", "check", str(folder))
    assert checked.exit_code == 1
    assert_shown_not_obeyed(checked, "problem:", "X[/bogus]", "\\x1b]0;pwned")


def test_the_warning_line_shows_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    record = logging.LogRecord("selftaught", logging.WARNING, __file__, 1, "probe said %s", (NOTE,), None)
    _WarningLine().emit(record)
    printed = capsys.readouterr().err
    assert not any(raw in printed for raw in RAW)
    assert f"warning: probe said {NOTE_SHOWN}" in printed


class _NoLauncher:
    def __init__(self, *arguments: Any) -> None: ...
    def start(self) -> None: ...
    def close(self) -> None: ...


@pytest.mark.slow
def test_doctor_shows_a_probe_childs_text_visibly_and_keeps_its_own_colors(monkeypatch: pytest.MonkeyPatch) -> None:
    report = SandboxReport(
        missing={"undumpable": f"X[/bogus] {NOTE}"}, checks={"open a socket": False}, problem=f"child: {NOTE}"
    )
    monkeypatch.setattr(doctor_command, "Launcher", _NoLauncher)
    monkeypatch.setattr(doctor_command, "probe", lambda launcher: report)
    colored = invoke("doctor", env={"FORCE_COLOR": "1", "NO_COLOR": None, "TERM": "xterm-256color"})
    assert colored.exit_code == 1
    # The escape sequences rich writes for the command's own styles are there; the child's are not.
    assert "\x1b[31m" in colored.stdout or "\x1b[1;31m" in colored.stdout
    hostile_sequences = ("\x1b]0;", "\x1b[2J", "\x07", "\u202e", "\u2066")
    assert not any(sequence in colored.stdout for sequence in hostile_sequences), colored.stdout
    for text in ("X[/bogus]", "the probe failed:", "NOT BLOCKED", "strict mode would refuse to run here"):
        assert text in colored.stdout
    plain = invoke("doctor")
    assert_shown_not_obeyed(plain, f"child: {NOTE_SHOWN}", "X[/bogus]", "NOT BLOCKED")


@pytest.mark.parametrize(
    "character",
    ["\u3164", "\u115f", "\uffa0", "\u034f", "\ufe0f", "\U000e0100", "\u17b4", "\u180b", "\u2800", "\u00ad"],
)
def test_characters_that_show_as_nothing_are_escaped(character: str) -> None:
    """Hangul fillers are valid in Python names: `def f(x\u3164=None)` hides a parameter in plain sight."""
    shown = visible_controls(f"x{character}y")
    assert character not in shown and shown == f"x{character.encode('unicode_escape').decode()}y"
    assert visible_controls(shown) == shown and visible_controls("café ü 日本") == "café ü 日本"
