"""The dashboard over stores built to break it: values of any type or size, runs and iterations by the thousand,
programs too large to audit on every view, odd run ids and page numbers. Every page answers, in bounded time
and size, with "malformed record" where a value is not what selftaught writes, never a 500 or a hang.

The stores are written row by row into the schema `RunStore` creates, as a hostile file or a damaged disk
would leave them: no run is recorded, so these tests are fast.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from selftaught.dashboard import analysis, charts, queries
from selftaught.dashboard.app import create_app
from selftaught.dashboard.reader import PageReader, run_segment
from selftaught.dashboard.security import Access
from selftaught.store.rows import program_hash
from selftaught.store.run_store import RunStore

testclient = pytest.importorskip("starlette.testclient", reason="the dashboard's tests need the dev extra")

RUN = "20260101-000000-aaaaaa"
STAMP = "2026-01-01T00:00:00.000+00:00"
IMPROVER = "def improve_algorithm(initial_solution, utility, language_model):\n    return initial_solution\n"
REQUEST = {"system": "s", "message": "m", "n": 1, "temperature": 0.7, "max_tokens": 64, "seed": None}


class Store:
    """A store file written row by row: each method adds one row, with any value where the test needs one."""

    def __init__(self, path: Path) -> None:
        RunStore(path).close()  # the schema, as a real store has it
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)

    def run(self, run_id: str = RUN, command: str = "run", **columns: Any) -> str:
        row = {"id": run_id, "command": command, "task": "parity_noise", "model": "scripted:x", "seed": 0,
               "config": json.dumps({"name": "test", "iterations": 2}), "status": "finished",
               "started_at": STAMP, "options": "{}", "attempts": 1, **columns}  # fmt: skip
        self._insert("runs", row)
        return run_id

    def program(self, source: str = IMPROVER) -> str:
        self.db.execute("INSERT OR IGNORE INTO programs VALUES (?, 'improver', ?)", (program_hash(source), source))
        return program_hash(source)

    def iterations(self, values: list[tuple[Any, Any]], run_id: str = RUN, improver: str | None = None) -> None:
        improver = improver or self.program()
        self.db.execute("BEGIN")
        for number, (val, test) in enumerate(values):
            row = {"run_id": run_id, "iteration": number, "improver_hash": improver, "meta_utility_val": val,
                   "meta_utility_test": test, "accepted": 1}  # fmt: skip
            self._insert("iterations", row)
        self.db.execute("COMMIT")

    def call(self, run_id: str = RUN, **columns: Any) -> None:
        row = {"run_id": run_id, "backend": "scripted", "request": json.dumps(REQUEST), "responses": '["ok"]',
               "prompt_tokens": 1, "completion_tokens": 1, "latency_seconds": 0.5, "cost_usd": 0.001,
               "created_at": STAMP, **columns}  # fmt: skip
        self._insert("lm_calls", row)

    def _insert(self, table: str, row: dict[str, Any]) -> None:
        marks = ", ".join("?" * len(row))
        self.db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({marks})", tuple(row.values()))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    made = Store(tmp_path / "runs.sqlite")
    yield made
    made.db.close()


def client(store: Store) -> Any:
    return testclient.TestClient(create_app(store.path, Access(8321, None)), base_url="http://127.0.0.1:8321")


def within(seconds: float, work: Callable[[], Any]) -> Any:
    """What `work` returns, asserting it returned within `seconds` (a loop that never ends fails, not hangs)."""
    done: list[Any] = []
    worker = threading.Thread(target=lambda: done.append(work()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert done, f"still running after {seconds} s"
    return done[0]


# --- charts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [1e16, 1.0000000000000004e16],  # 4 apart: a step below the float spacing never moved `value += step`
        [-1e308, 1e308],  # their difference overflows
        [float("nan"), float("inf"), 0.5],
        [0.0, 5e-324],
        ["x", None, 0.5, 10**400],
        [3.0, 3.0],
    ],
    ids=["float-spacing", "overflow", "non-finite", "denormal", "not-numbers", "flat"],
)
def test_a_chart_of_any_values_is_drawn_with_a_bounded_number_of_ticks(values: list[Any]) -> None:
    series = [charts.Series("v", list(range(len(values))), values, "val")]
    chart = within(5, lambda: charts.line_chart("t", series, x_label="i", y_label="v", integer_x=True))
    assert 2 <= len(chart.y_ticks) <= charts.MAX_TICKS and 2 <= len(chart.x_ticks) <= charts.MAX_TICKS
    drawn = [point.data["value"] for line in chart.lines for point in line.points]
    assert drawn == [repr(value) for value in values if charts._finite(value) is not None]


def test_huge_iteration_numbers_and_many_points_stay_bounded() -> None:
    xs = list(range(20_000))
    xs[-1] = 2**62
    chart = within(10, lambda: charts.line_chart("t", [charts.Series("v", xs, [x % 7 for x in range(20_000)], "val")],
                                                 x_label="i", y_label="v", integer_x=True))  # fmt: skip
    assert len(chart.lines[0].points) == charts.MAX_POINTS
    assert all(len(tick.label) < 12 for tick in chart.x_ticks)


def test_a_run_whose_values_hang_or_overflow_a_chart_is_shown(store: Store) -> None:
    store.run()
    store.iterations([(1e16, 1e16), (1.0000000000000004e16, -1e308), (0.5, 1e308)])
    response = within(20, lambda: client(store).get(f"/runs/{RUN}"))
    assert response.status_code == 200
    assert within(20, lambda: client(store).get(f"/compare?run={RUN}")).status_code == 200


# --- values that are not what selftaught writes -------------------------------------------------


def test_hostile_values_are_shown_as_malformed_records_and_the_page_answers(store: Store) -> None:
    nested: dict[str, Any] = {"x": 1}
    for _ in range(900):
        nested = {"k": nested}
    store.run(config=json.dumps({"name": "test", "deep": nested}), started_at="soon",
              options=json.dumps({"profile": {}, "deep": nested}))  # fmt: skip
    store.iterations([(0.25, 0.125), (0.5, 0.25)])
    store.call(created_at="yesterday")
    store.call(created_at="2026-12-03T16:31:02")  # no offset: it cannot be put beside the run's start
    store.call(cost_usd=1e308)
    store.call(cost_usd=1e308)
    result = {"examples": ["x", {"labels": [1], "lines": "no"}], "paper": [1], "interval_95": 3, "warning": "yes"}
    store.run("20260101-000000-bbbbbb", command="experiment unsandboxing", result=json.dumps(result))
    store.run("20260101-000000-cccccc", seed="abc")
    browser = client(store)
    for path in ("/", "/?sort=seed", "/?sort=cost_usd", f"/runs/{RUN}", f"/runs/{RUN}/lineage", f"/runs/{RUN}/calls",
                 "/experiments", "/transfer"):  # fmt: skip
        response = browser.get(path)
        assert response.status_code == 200, (path, response.text[-500:])
    assert "malformed record" in browser.get("/experiments").text
    run_page = browser.get(f"/runs/{RUN}").text
    assert "4 calls not drawn over time" in run_page and "$inf" in run_page  # the run's own start is no date
    # A seed that is not a number: the reader refuses the run's row, so its page says so; the list shows it.
    assert browser.get("/runs/20260101-000000-cccccc").status_code == 503 and "abc" in browser.get("/").text


def test_a_malformed_run_is_its_own_page_s_503_and_no_other_page_s(store: Store) -> None:
    store.run()
    store.iterations([(0.25, 0.125)])
    store.run("20260101-000000-eeeeee", command="transfer", options="{not json")
    browser = client(store)
    broken = browser.get("/runs/20260101-000000-eeeeee")
    assert broken.status_code == 503 and "malformed record" in broken.text
    assert browser.get("/runs/20260101-000000-ffffff").status_code == 404
    transfer = browser.get("/transfer")
    assert transfer.status_code == 200 and "20260101-000000-eeeeee not shown" in transfer.text
    assert browser.get("/").status_code == 200 and browser.get(f"/runs/{RUN}").status_code == 200


def test_an_unforeseen_failure_is_one_line_and_500_never_a_traceback(store: Store, monkeypatch: Any) -> None:
    store.run()
    monkeypatch.setattr(queries, "run_view", lambda reader, run_id: 1 / 0)
    response = client(store).get(f"/runs/{RUN}")
    assert response.status_code == 500 and "ZeroDivisionError" in response.text and "Traceback" not in response.text


# --- sizes -----------------------------------------------------------------------------------------


def test_the_runs_list_reads_one_page_of_runs_in_sql(store: Store, monkeypatch: Any) -> None:
    """No per-run query, and never every run: the list and its once-a-second version stay cheap however many."""
    store.db.execute("BEGIN")
    for number in range(120):
        store.run(
            f"20260101-{number:06d}-abcdef", started_at=f"2026-01-01T00:{number // 60:02d}:{number % 60:02d}+00:00"
        )
    store.db.execute("COMMIT")
    for number in range(0, 120, 7):
        store.iterations([(number / 120, 1 - number / 120)], run_id=f"20260101-{number:06d}-abcdef")
    read: list[str] = []
    monkeypatch.setattr(PageReader, "iterations", lambda self, run_id: read.append(run_id) or [])
    monkeypatch.setattr(PageReader, "runs", lambda self: read.append("every run") or [])
    browser = client(store)
    assert browser.get("/api/runs/version").status_code == 200
    newest = browser.get("/")
    best = browser.get("/?sort=best_val&page=1")
    assert read == []
    assert newest.text.count('<tr data-run="') == queries.RUNS_PER_PAGE
    assert re.search(r'data-run="([^"]+)"', newest.text).group(1) == "20260101-000119-abcdef"  # type: ignore[union-attr]
    assert re.search(r'data-run="([^"]+)"', best.text).group(1) == "20260101-000119-abcdef"  # type: ignore[union-attr]
    scored = re.findall(r'data-run="([^"]+)"', best.text)[:18]
    assert scored == [f"20260101-{number:06d}-abcdef" for number in range(119, -1, -7)]  # a best val of 0.0 among them
    last = re.findall(r'data-run="([^"]+)"', browser.get("/?sort=best_val&page=3").text)
    assert len(last) == 20 and last[-1] == "20260101-000118-abcdef"  # unscored runs last, oldest first


def test_the_version_changes_with_what_the_runs_list_shows(store: Store) -> None:
    store.run(status="running", pid=2**22 + 12345, host="elsewhere")
    browser = client(store)
    before = browser.get("/api/runs/version").json()["version"]
    store.iterations([(0.5, 0.5)])
    after_iteration = browser.get("/api/runs/version").json()["version"]
    store.db.execute("UPDATE runs SET status = 'finished'")
    finished = browser.get("/api/runs/version").json()["version"]
    assert len({before, after_iteration, finished}) == 3


def test_a_run_of_thousands_of_iterations_draws_and_lists_a_bounded_page(store: Store) -> None:
    store.run()
    store.iterations([(0.5 + (n % 7) / 100, 0.5) for n in range(5_000)])
    browser = client(store)
    page = within(30, lambda: browser.get(f"/runs/{RUN}"))
    assert page.text.count("<circle") <= 2 * charts.MAX_POINTS
    assert page.text.count("<tr data-iteration=") == queries.ITERATIONS_PER_PAGE
    last = browser.get(f"/runs/{RUN}?page=50&fragment=1").text
    assert 'data-iteration="4999"' in last and "page 50 of 50" in last
    lineage = browser.get(f"/runs/{RUN}/lineage?page=2").text
    assert lineage.count('<li class="step"') == 25 and 'id="iteration-25"' in lineage


def test_a_long_response_is_cut_on_the_calls_page_and_whole_on_its_own(store: Store) -> None:
    store.run()
    long = "é" * 100_000 + "THE END"
    store.call(responses=json.dumps([long]))
    browser = client(store)
    listed = browser.get(f"/runs/{RUN}/calls").text
    assert "THE END" not in listed and f"the first {queries.SHOWN_CHARACTERS} of 100007 characters" in listed
    whole = browser.get(f"/runs/{RUN}/calls/1")
    assert whole.status_code == 200 and "THE END" in whole.text
    assert browser.get(f"/runs/{RUN}/calls/2").status_code == 404


def test_an_improver_too_large_to_audit_on_every_view_is_shown_with_a_note(store: Store, monkeypatch: Any) -> None:
    large = IMPROVER + "    if False:\n        x = [" + "a, " * 30_000 + "]\n"
    deep = IMPROVER + "    x = a" + ".b" * 1000 + "\n    language_model.budget = 10**9\n"
    parent = IMPROVER + "".join(f"    x{n} = {n}\n" for n in range(analysis.MAX_DIFF_LINES))
    store.run()
    store.iterations([(0.5, 0.5)], improver=store.program(parent))
    for source in (large, deep):
        store.db.execute(
            "INSERT INTO iterations (run_id, iteration, improver_hash, meta_utility_val, meta_utility_test,"
            " candidate_hash, accepted) VALUES (?, (SELECT MAX(iteration) + 1 FROM iterations), ?, 0.5, 0.5, ?, 0)",
            (RUN, store.program(parent), store.program(source)),
        )
    browser = client(store)
    shown = within(10, lambda: browser.get(f"/runs/{RUN}/improvers/{program_hash(large)}"))
    assert "analysis skipped: program too large" in shown.text and "diff skipped: programs too large" in shown.text
    audited: list[str] = []
    real = analysis.program_findings
    monkeypatch.setattr(analysis, "program_findings", lambda source, kind: audited.append(source) or real(source, kind))
    for _ in range(2):  # audited once, then remembered
        page = browser.get(f"/runs/{RUN}/improvers/{program_hash(deep)}")
        assert page.status_code == 200 and "budget_tampering" in page.text
    assert len(audited) == 1


# --- addresses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "page", ["%C2%B2", "%E2%91%A0", "%F0%9D%9F%99", "-1", "1e3", "99999999999", "0x10", "%EF%BC%92"]
)
def test_a_page_number_of_other_digits_or_no_number_is_the_first_page(store: Store, page: str) -> None:
    store.run()
    browser = client(store)
    for path in ("/", "/?fragment=1", f"/runs/{RUN}", f"/runs/{RUN}/calls", f"/runs/{RUN}/lineage"):
        assert browser.get(f"{path}{'&' if '?' in path else '?'}page={page}").status_code == 200, path


@pytest.mark.parametrize("odd", [f"{RUN}/calls", "a b?c#d", "..", "~7e", "é", "%2F"])
def test_a_run_id_of_any_characters_links_to_its_own_page(store: Store, odd: str) -> None:
    store.run()
    store.run(odd, command="improve", task="the-odd-one")
    browser = client(store)
    link = re.search(rf'href="(/runs/{re.escape(run_segment(odd))})"', browser.get("/").text)
    assert link is not None and "%" not in link.group(1)
    page = browser.get(link.group(1))
    assert page.status_code == 200 and "the-odd-one" in page.text
    assert browser.get("/runs/~zz").status_code == 404
