"""Runs that survive anything: SIGKILL at random points, Ctrl-C, a damaged or locked store — with real processes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from selftaught.errors import StoreError
from selftaught.store.reading import StoreReader
from selftaught.store.run_store import RunStore

RESPONDER = Path(__file__).parent / "responders" / "improving_lpn.py"
RUN_FLAGS = (
    "--cache", "off", "--iterations", "2", "--lm-calls", "2", "--responses-per-call", "2",
    "--meta-utility-runs", "2", "--meta-utility-budget", "2", "--utility-budget", "3", "--seed", "11",
)  # fmt: skip
KILL_POINTS = 10


def selftaught(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "selftaught", *arguments]


def start_run(store: Path, model: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        selftaught("run", "--model", model, "--store", str(store), *RUN_FLAGS, "--json", *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> dict[str, Any]:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    return dict(json.loads(stdout))


def run_ids(store: Path) -> list[str]:
    if not store.exists():
        return []
    with sqlite3.connect(store) as connection:
        try:
            return [row[0] for row in connection.execute("SELECT id FROM runs ORDER BY started_at")]
        except sqlite3.OperationalError:  # the schema is still being created
            return []


def wait_for_run(store: Path, process: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        ids = run_ids(store)
        if ids:
            return ids[-1]
        time.sleep(0.02)
    raise AssertionError("the run never recorded itself")


def live_requests(store: Path, run_id: str) -> Counter[str]:
    """Requests the backend answered for real: not replayed from the record, not from the cache."""
    with sqlite3.connect(store) as connection:
        rows = connection.execute(
            "SELECT request FROM lm_calls WHERE run_id = ? AND replayed = 0 AND cache_hit = 0 AND error IS NULL",
            (run_id,),
        )
        return Counter(json.dumps(json.loads(request), sort_keys=True) for (request,) in rows)


#: What `run --json` and `show --json` both say about each iteration.
ITERATION_FIELDS = (
    "iteration", "meta_utility_val", "meta_utility_test", "accepted", "candidate_val", "candidate_test", "error",
)  # fmt: skip


def resume(store: Path, run_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        selftaught("run", "--resume", run_id, "--store", str(store), "--json"),
        capture_output=True,
        text=True,
        timeout=300,
    )


def result_of(report: dict[str, Any]) -> tuple[Any, ...]:
    iterations = [{field: it[field] for field in ITERATION_FIELDS} for it in report["iterations"]]
    return iterations, report["final_improver"]


def stored_result(store: Path, run_id: str) -> tuple[Any, ...]:
    """The finished run as `selftaught show --json` and its store hold it, in `result_of`'s shape."""
    shown = subprocess.run(selftaught("show", run_id, "--store", str(store), "--json"), capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr[-2000:]
    view = json.loads(shown.stdout)
    assert view["status"] == "finished", view["status"]
    with StoreReader(store) as reader:
        final_improver = reader.program(view["iterations"][-1]["improver_hash"])
    assert [it["meta_utility_val"] for it in view["result"]["iterations"]] == [
        it["meta_utility_val"] for it in view["iterations"]
    ]
    return result_of({**view, "final_improver": final_improver})


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Counter[str], float]:
    """An uninterrupted run: its report, the requests it paid for and how long it took."""
    store = tmp_path_factory.mktemp("baseline") / "runs.sqlite"
    started = time.monotonic()
    report = finish(start_run(store, f"scripted:{RESPONDER}"))
    return report, live_requests(store, report["run_id"]), time.monotonic() - started


@pytest.mark.slow
def test_baseline_pays_each_request_once_and_improves(baseline: tuple[dict[str, Any], Counter[str], float]) -> None:
    report, requests, _ = baseline
    assert stored_result(Path(report["store"]), report["run_id"]) == result_of(report)
    assert set(requests.values()) == {1}
    assert len(requests) >= 20
    assert any(iteration["accepted"] for iteration in report["iterations"][1:])


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_repeats_no_paid_call_and_ends_the_same(
    tmp_path: Path, baseline: tuple[dict[str, Any], Counter[str], float]
) -> None:
    expected, paid_once, duration = baseline
    points = random.Random(2026).sample(range(5, 96), KILL_POINTS)  # percent of an uninterrupted run
    kill_twice = set(points[::3])  # some resumed runs are killed again before they finish
    for point in points:
        store = tmp_path / f"kill-at-{point}" / "runs.sqlite"
        process = start_run(store, f"scripted:{RESPONDER}")
        run_id = wait_for_run(store, process)
        time.sleep(duration * point / 100)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        if point in kill_twice:
            again = subprocess.Popen(
                selftaught("run", "--resume", run_id, "--store", str(store)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(duration * 0.3)
            again.send_signal(signal.SIGKILL)
            again.wait(timeout=30)
        resumed = resume(store, run_id)
        # Killed after its last write, the run has nothing left to do: its record is checked all the same.
        finished_already = resumed.returncode != 0 and "already finished" in resumed.stderr
        where = f"kill at {point}% ({'finished before the resume' if finished_already else 'resumed'})"
        if not finished_already:
            assert resumed.returncode == 0, f"{where}: {resumed.stderr[-2000:]}"
            report = json.loads(resumed.stdout)
            assert report["run_id"] == run_id
            assert result_of(report) == result_of(expected), where
        assert stored_result(store, run_id) == result_of(expected), where
        paid = live_requests(store, run_id)
        repeated = [request for request, count in paid.items() if count > 1]
        assert not repeated, f"{where}: {len(repeated)} paid calls were asked again"
        assert set(paid) == set(paid_once), where


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_prints_the_resume_command_and_the_resume_finishes(
    tmp_path: Path, baseline: tuple[dict[str, Any], Counter[str], float]
) -> None:
    expected, _, duration = baseline
    store = tmp_path / "runs.sqlite"
    process = start_run(store, f"scripted:{RESPONDER}")
    run_id = wait_for_run(store, process)
    time.sleep(duration * 0.4)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert f"selftaught run --resume {run_id} --store {store}" in stderr
    assert "Traceback" not in stderr
    listed = subprocess.run(selftaught("runs", "--store", str(store), "--json"), capture_output=True, text=True)
    assert [(run["id"], run["status"]) for run in json.loads(listed.stdout)] == [(run_id, "interrupted")]
    resumed = subprocess.run(
        selftaught("run", "--resume", run_id, "--store", str(store), "--json"), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert result_of(json.loads(resumed.stdout)) == result_of(expected)


@pytest.mark.slow
def test_show_and_runs_work_while_a_run_is_writing(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    process = start_run(store, f"scripted:{RESPONDER}")
    run_id = wait_for_run(store, process)
    seen_running = 0
    while process.poll() is None:
        shown = subprocess.run(
            selftaught("show", run_id, "--store", str(store), "--json"), capture_output=True, text=True
        )
        assert shown.returncode == 0, shown.stderr
        seen_running += json.loads(shown.stdout)["status"] == "running"
    finish(process)
    assert seen_running >= 1
    listed = subprocess.run(selftaught("runs", "--store", str(store), "--json"), capture_output=True, text=True)
    [run] = json.loads(listed.stdout)
    assert run["id"] == run_id and run["status"] == "finished" and run["started_at"]


@pytest.mark.slow
def test_a_killed_run_shows_as_killed_and_a_finished_or_running_one_is_not_resumed(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    process = start_run(store, f"scripted:{RESPONDER}")
    run_id = wait_for_run(store, process)
    refused = subprocess.run(
        selftaught("run", "--resume", run_id, "--store", str(store)), capture_output=True, text=True
    )
    assert refused.returncode == 2 and "still running" in refused.stderr
    process.send_signal(signal.SIGKILL)
    process.wait()
    listed = subprocess.run(selftaught("runs", "--store", str(store), "--json"), capture_output=True, text=True)
    assert json.loads(listed.stdout)[0]["status"] == "killed"
    subprocess.run(selftaught("run", "--resume", run_id, "--store", str(store)), capture_output=True, check=True)
    again = subprocess.run(selftaught("run", "--resume", run_id, "--store", str(store)), capture_output=True, text=True)
    assert again.returncode == 2 and "already finished" in again.stderr
    conflicting = subprocess.run(
        selftaught("run", "--resume", run_id, "--store", str(store), "--task", "maxcut"), capture_output=True, text=True
    )
    assert conflicting.returncode == 2 and "--task cannot change them" in conflicting.stderr


@pytest.mark.slow
def test_a_damaged_store_is_one_clear_error(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    store.write_bytes(b"this is not a database, it is a text file" * 200)
    for command in (("runs",), ("show", "x"), ("run", "--model", f"scripted:{RESPONDER}", *RUN_FLAGS)):
        completed = subprocess.run(selftaught(*command, "--store", str(store)), capture_output=True, text=True)
        assert completed.returncode == 2, command
        assert "error:" in completed.stderr and "damaged or is not a selftaught store" in completed.stderr
        assert "Traceback" not in completed.stderr
    missing = subprocess.run(
        selftaught("runs", "--store", str(tmp_path / "none.sqlite")), capture_output=True, text=True
    )
    assert missing.returncode == 2 and "no run store at" in missing.stderr


@pytest.mark.slow
def test_a_locked_store_is_a_clear_error_for_writers_while_readers_go_on(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    RunStore(store).close()
    holder = sqlite3.connect(store, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        writer = RunStore(store, busy_timeout_seconds=0.2)
        with pytest.raises(StoreError, match=r"locked .*another process holds it"):
            writer.create_run(command="run", task="parity_noise", model="m", seed=0, config={}, options={})
        writer.close()
        listed = subprocess.run(selftaught("runs", "--store", str(store), "--json"), capture_output=True, text=True)
        assert listed.returncode == 0 and json.loads(listed.stdout) == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_pid_of_a_dead_process_is_not_alive() -> None:
    from selftaught.store.reading import process_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_alive(os.getpid())
    assert not process_alive(child.pid)


@pytest.mark.slow
def test_a_run_of_a_python_task_object_resumes_from_python_with_the_task_given_again(tmp_path: Path) -> None:
    from dataclasses import replace

    from selftaught import api
    from selftaught.api import RunOptions
    from selftaught.tasks.parity_noise import ParityNoise

    # The responder of the crash tests, interrupted (as by Ctrl-C) at its 12th response in this process.
    responder = tmp_path / "interrupting.py"
    responder.write_text(
        RESPONDER.read_text()
        + "\n\n_answered = 0\n_respond = respond\n\n"
        + "def respond(system, user, temperature, index, seed):\n"
        + "    global _answered\n    _answered += 1\n"
        + "    if _answered == 12 and not __import__('os').environ.get('NO_INTERRUPT'):\n"
        + "        raise KeyboardInterrupt\n"
        + "    return _respond(system, user, temperature, index, seed)\n"
    )
    options = RunOptions(task=ParityNoise(), model=f"scripted:{responder}", seed=11, store=tmp_path / "runs.sqlite")
    options = replace(options, profile=options.profile.with_overrides(iterations=2, max_tokens=64))
    with pytest.raises(KeyboardInterrupt):
        api.run(options)
    [run_id] = run_ids(options.store)
    with pytest.raises(StoreError, match="ran a Task object from Python"):
        api.resume(run_id, options.store)
    os.environ["NO_INTERRUPT"] = "1"
    try:
        resumed = api.resume(run_id, options.store, task=ParityNoise())
        uninterrupted = api.run(replace(options, store=tmp_path / "again.sqlite"))
    finally:
        del os.environ["NO_INTERRUPT"]
    assert resumed.run_id == run_id
    assert [r.as_row() for r in resumed.iterations] == [r.as_row() for r in uninterrupted.iterations]


def test_a_pid_reused_by_another_process_does_not_keep_a_killed_run_running(tmp_path: Path) -> None:
    from selftaught.store.reading import StoreReader

    store = RunStore(tmp_path / "runs.sqlite")
    run_id = store.create_run(command="run", task="parity_noise", model="m", seed=0, config={}, options={})
    with StoreReader(tmp_path / "runs.sqlite") as reader:
        assert reader.run(run_id)["status"] == "running"  # this very process
    # The same live pid, but recorded for a process that started at another time: that one is gone.
    with sqlite3.connect(tmp_path / "runs.sqlite") as connection:
        connection.execute("UPDATE runs SET process = 'another-boot:12345' WHERE id = ?", (run_id,))
    with StoreReader(tmp_path / "runs.sqlite") as reader:
        assert reader.run(run_id)["status"] == "killed"
    store.close()


def spent(store: Path) -> float:
    with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(store) as connection:
        return float(
            connection.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM lm_calls WHERE replayed = 0").fetchone()[0]
        )
    return 0.0


@pytest.mark.slow
def test_a_run_killed_after_crossing_its_cost_limit_resumes_to_the_same_end(tmp_path: Path) -> None:
    """What the run paid before it was killed is replayed, not refused: the limit applies to live calls."""
    prices = tmp_path / "prices.toml"
    prices.write_text(f'[prices."scripted:{RESPONDER}"]\ninput = 1000\noutput = 1000\n')
    capped = ("--config", str(prices), "--max-cost", "6")  # crossed in iteration 1 of 2
    expected = finish(start_run(tmp_path / "whole.sqlite", f"scripted:{RESPONDER}", *capped))
    assert expected["stopped"] == "cost limit reached" and len(expected["iterations"]) == 2
    for delay in (0.0, 0.15):
        store = tmp_path / f"killed-{delay}" / "runs.sqlite"
        process = start_run(store, f"scripted:{RESPONDER}", *capped)
        run_id = wait_for_run(store, process)
        while spent(store) < 6 and process.poll() is None:
            time.sleep(0.005)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        resumed = resume(store, run_id)
        if "already finished" in resumed.stderr:
            assert stored_result(store, run_id) == result_of(expected), f"killed {delay} s after the limit"
            continue
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        report = json.loads(resumed.stdout)
        assert (result_of(report), report["stopped"]) == (result_of(expected), expected["stopped"]), delay


CLOCK_IMPROVER = '''import time
from helpers import extract_code

def improve_algorithm(initial_solution, utility, language_model):
    best = initial_solution
    for _ in range(language_model.budget):
        try:
            responses = language_model.prompt("expert", f"[{time.time_ns()}] improve:\\n" + "x" * 4000, 1, 0.7)
        except Exception:
            break
        best = (extract_code(responses) or [best])[0]
    return initial_solution if "def improve_algorithm" in initial_solution else best
'''


@pytest.mark.slow
def test_a_resumed_run_whose_improvers_ask_new_questions_still_keeps_to_its_cost_limit(tmp_path: Path) -> None:
    """Generated code with the clock in its prompts asks other questions after a resume: nothing is replayed,
    and what the first attempt paid must still count toward the limit (it did not: the run spent twice its cap)."""
    from dataclasses import replace

    from selftaught import api
    from selftaught.api import RunOptions
    from selftaught.llm.cache import CacheMode

    responder = tmp_path / "interrupting.py"
    responder.write_text(
        "import os\n_answered = 0\n\n"
        "def respond(system, user, temperature, index):\n"
        "    global _answered\n    _answered += 1\n"
        "    if _answered == 4 and not os.environ.get('NO_INTERRUPT'):\n"
        "        raise KeyboardInterrupt\n"
        "    return '```python\\nimport numpy as np\\n\\ndef algorithm(train_samples, train_parity, test_samples):\\n'"
        " '    return np.zeros(len(test_samples), dtype=int)\\n```'\n"
    )
    prices = tmp_path / "prices.toml"  # a prompt of about 4,000 characters: about $1 a call
    prices.write_text(f'[prices."scripted:{responder}"]\ninput = 1000\noutput = 1000\n')
    options = RunOptions(
        task="parity_noise",
        model=f"scripted:{responder}",
        seed=3,
        store=tmp_path / "runs.sqlite",
        config=prices,
        cache=CacheMode.OFF,
        max_cost_usd=5.0,
        workers=1,
    )
    options = replace(
        options,
        profile=options.profile.with_overrides(
            iterations=1, language_model_calls=3, responses_per_call=1, meta_utility_runs=2, meta_utility_calls=1,
            utility_calls=1, max_tokens=64,
        ),
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        api.run(options, improver=CLOCK_IMPROVER)
    [run_id] = run_ids(options.store)
    paid_before, one_call = spent(options.store), spent(options.store) / 3
    assert 2 < paid_before < 5
    os.environ["NO_INTERRUPT"] = "1"
    try:
        resumed = api.resume(run_id, options.store)
    finally:
        del os.environ["NO_INTERRUPT"]
    paid = spent(options.store)
    assert paid > paid_before  # it went on, live: nothing it asked was asked before
    # The limit ends live calls once crossed: the whole run pays at most one call past it, as an uninterrupted one.
    assert paid < 5.0 + one_call + 0.01, (paid_before, paid)
    assert resumed.cost_usd == pytest.approx(paid)


@pytest.mark.slow
def test_a_replay_records_no_spending_of_its_own(tmp_path: Path) -> None:
    """A replay pays nothing: its record, its report and its progress say $0 (they said what the original paid)."""
    from dataclasses import replace

    from selftaught import api
    from selftaught.api import RunOptions
    from selftaught.llm.cache import CacheMode

    prices = tmp_path / "prices.toml"
    prices.write_text(f'[prices."scripted:{RESPONDER}"]\ninput = 1000\noutput = 1000\n')
    options = RunOptions(
        model=f"scripted:{RESPONDER}", store=tmp_path / "runs.sqlite", config=prices, cache=CacheMode.OFF, workers=1
    )
    options = replace(options, profile=options.profile.with_overrides(iterations=1))
    original = api.run(options)
    assert original.cost_usd > 0
    replayed = api.replay(original.run_id, options.store)
    assert replayed.cost_usd == 0
    with StoreReader(options.store) as reader:
        assert reader.run(replayed.run_id)["result"]["cost_usd"] == 0
        assert reader.counts(replayed.run_id)["cost_usd"] == 0
