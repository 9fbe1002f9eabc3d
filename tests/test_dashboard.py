"""The dashboard in a real browser (Debian's Chromium through Playwright) over runs recorded by scripted models.

Every page of a recorded run is clicked through and photographed (tests/artifacts/), Figure 4's
points are checked against the store, a run being written updates the open page without a reload
(also across its process being killed and the run resumed), and responses full of markup, script
and escape sequences are shown as text: no dialog, no request beyond this machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from conftest import TEST_PROFILE
from selftaught import api
from selftaught.api import RunOptions
from selftaught.dashboard.server import DashboardServer
from selftaught.llm.cache import CacheMode
from selftaught.store.reading import StoreReader
from selftaught.store.run_store import RunStore

pytestmark = pytest.mark.slow  # a browser against a served store, after whole recorded runs

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the dashboard's browser tests need playwright (dev extra)"
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
IMPROVING = Path(__file__).resolve().parent / "responders" / "improving_lpn.py"
#: What a page waits for at most, in ms: live regions poll every second.
LIVE_TIMEOUT_MS = 5000

if not Path(CHROMIUM).exists():
    if os.geteuid() == 0:
        pytest.fail(f"no Chromium at {CHROMIUM}: `make sandbox-tools` installs it (apt-get install chromium)")
    pytest.skip(
        "Debian's chromium is not installed; as root, `make sandbox-tools` installs it", allow_module_level=True
    )

#: Everything a hostile model could send a web page: script, an event handler, a javascript: link, a request to
#: another host, a stylesheet from elsewhere, and a terminal escape sequence.
PAYLOAD = (
    "<script>alert('xss-script')</script> <img src=x onerror=\"alert('xss-img')\">"
    ' <a href="javascript:alert(\'xss-link\')">click me</a> <img src="http://evil.example/pixel.png">'
    ' <link rel="stylesheet" href="https://evil.example/x.css"> \x1b[31mRED-ANSI\x1b[0m'
)
#: The payload where a program carries it: in a comment (escape sequence and all) and in what it raises or returns.
COMMENT = PAYLOAD.replace("\n", " ")
HOSTILE_IMPROVER = (
    "def improve_algorithm(initial_solution, utility, language_model):\n"
    f"    # {COMMENT}\n"
    f"    raise RuntimeError({PAYLOAD!r})\n"
)
HOSTILE_SOLUTION = (
    "def algorithm(train_samples, train_parity, test_samples):\n"
    f"    # {COMMENT}\n"
    f"    return [{PAYLOAD!r}] * len(test_samples)\n"
)
HOSTILE_RESPONDER = (
    f"PAYLOAD = {PAYLOAD!r}\nIMPROVER = {HOSTILE_IMPROVER!r}\nSOLUTION = {HOSTILE_SOLUTION!r}\n\n\n"
    "def respond(system, user, temperature, index):\n"
    "    code = IMPROVER if 'def improve_algorithm' in user else SOLUTION\n"
    "    return PAYLOAD + '\\n```python\\n' + code + '```\\n'\n"
)


def options(store: Path, model: str, seed: int = 1) -> RunOptions:
    return RunOptions(
        task="parity_noise", model=model, profile=TEST_PROFILE, seed=seed, store=store, cache=CacheMode.OFF, workers=2
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with what every page shows: a `run` that improves, one answered by the hostile model, a transfer of
    the first run's improver and an unsandboxing experiment."""
    folder = tmp_path_factory.mktemp("dashboard")
    store = folder / "runs.sqlite"
    hostile = folder / "hostile.py"
    hostile.write_text(HOSTILE_RESPONDER)
    improving = api.run(options(store, f"scripted:{IMPROVING}"))
    attacked = api.run(options(store, f"scripted:{hostile}", seed=2))
    api.transfer(options(store, f"scripted:{IMPROVING}"), improving.final_improver, ["parity_noise"], 2)
    api.unsandboxing_experiment(options(store, f"scripted:{IMPROVING}"), 2, False)
    return {"store": store, "improving": improving.run_id, "hostile": attacked.run_id}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"] if os.geteuid() == 0 else []
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(recorded: dict[str, Any]) -> Iterator[DashboardServer]:
    with DashboardServer(recorded["store"]) as running:
        yield running


class Watched:
    """A page whose dialogs and requests beyond this machine are recorded (and refused), and its console errors."""

    def __init__(self, browser: Any, base: str) -> None:
        self.base = base
        self.dialogs: list[str] = []
        self.foreign: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("dialog", self._dialog)
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))

    def _route(self, route: Any) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.foreign.append(route.request.url)
            route.abort()

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def goto(self, path: str) -> Any:
        response = self.page.goto(self.base + path)
        assert response is not None and response.ok, (path, response and response.status)
        return response

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(browser: Any, server: DashboardServer) -> Iterator[Watched]:
    page = Watched(browser, f"http://127.0.0.1:{server.port}")
    yield page
    page.close()
    assert page.dialogs == [], "a dialog opened: generated text ran as script"
    assert page.foreign == [], "the page asked for something beyond this machine"


def test_every_page_of_a_recorded_run_is_reached_by_clicking(watched: Watched, recorded: dict[str, Any]) -> None:
    page, run_id = watched.page, recorded["improving"]
    watched.goto("/")
    assert page.locator("table.runs tbody tr").count() == 4
    watched.shot("runs")
    page.click(f"a[href='/runs/{run_id}']")
    page.wait_for_url(f"**/runs/{run_id}")
    assert page.locator("#run-status").inner_text() == "finished"
    assert page.locator("#iterations tbody tr").count() == 2
    assert page.locator("#cost-chart figcaption").inner_text() == "cost (USD) over time"
    assert "selftaught run --replay " + run_id in page.locator("table.commands").inner_text()
    watched.shot("run")

    page.click("nav.tabs >> text=Lineage")
    page.wait_for_url("**/lineage")
    assert page.locator("ol.chain > li").count() == 2
    watched.shot("lineage")
    page.locator("#iteration-1 tr.returned a").first.click()
    page.wait_for_url("**/improvers/*")
    assert "diff against its parent" in page.locator("details.diff-box summary").inner_text()
    assert page.locator("table.source tr").count() > 5
    assert page.locator("article.improver-run").count() >= 1
    watched.shot("improver")
    page.locator("article.improver-run table.solutions a").first.click()
    page.wait_for_url("**/programs/*")
    assert "def algorithm" in page.locator("table.source").inner_text()

    page.click("nav.tabs >> text=Language-model calls")
    page.wait_for_url("**/calls")
    with StoreReader(recorded["store"]) as reader:
        calls = reader.progress(run_id)["lm_calls"]
    assert page.locator("article.call").count() == min(calls, 20)
    watched.shot("calls")
    if calls > 20:
        page.click("nav.pager >> text=next ›")
        page.wait_for_url("**/calls?page=2")
        assert page.locator("article.call").count() == min(calls - 20, 20)

    page.click("header.top >> text=Transfer")
    assert page.locator("section.transfer tbody tr").count() == 1
    assert "(" in page.locator("section.transfer tbody td.num").nth(0).inner_text()  # two repeats: an interval
    watched.shot("transfer")
    page.click("header.top >> text=Sandbox experiments")
    assert page.locator("table.experiments tbody tr").count() >= 1
    watched.shot("experiments")

    page.click("header.top >> text=Runs")
    for compared in (run_id, recorded["hostile"]):
        page.check(f"input[value='{compared}']")
    page.click("text=compare ticked runs")
    page.wait_for_url("**/compare?*")
    assert page.locator("ul.compared li").count() == 2
    assert page.locator("#compare-chart path.band").count() >= 1
    watched.shot("compare")
    assert watched.errors == []


def figure_points(page: Any) -> dict[tuple[str, int], float]:
    points = page.locator("#figure-4 circle.point").evaluate_all(
        "points => points.map(p => [p.dataset.series, p.dataset.x, p.dataset.value])"
    )
    return {(series, int(x)): float(value) for series, x, value in points}


def store_points(store: Path, run_id: str) -> dict[tuple[str, int], float]:
    with StoreReader(store) as reader:
        rows = reader.iterations(run_id)
    return {
        **{("validation", row["iteration"]): row["meta_utility_val"] for row in rows},
        **{("test", row["iteration"]): row["meta_utility_test"] for row in rows},
    }


def test_figure_4_draws_exactly_the_recorded_meta_utilities(watched: Watched, recorded: dict[str, Any]) -> None:
    watched.goto(f"/runs/{recorded['improving']}")
    assert figure_points(watched.page) == store_points(recorded["store"], recorded["improving"])
    dashed = watched.page.locator("#figure-4 path.line.test").get_attribute("stroke-dasharray")
    solid = watched.page.locator("#figure-4 path.line.val").get_attribute("stroke-dasharray")
    assert dashed and not solid  # validation solid, test dashed, as in the paper


def test_a_hostile_model_s_text_is_shown_literally_and_runs_nothing(watched: Watched, recorded: dict[str, Any]) -> None:
    page, run_id = watched.page, recorded["hostile"]
    shown = "<script>alert('xss-script')</script>"
    with StoreReader(recorded["store"]) as reader:
        improvers = {row["improver_hash"] for row in reader.improver_runs(run_id) if row["error"]}
    visited = {
        "hostile-calls": f"/runs/{run_id}/calls",
        "hostile-improver": f"/runs/{run_id}/improvers/{sorted(improvers)[0]}",
        "hostile-run": f"/runs/{run_id}",
        "hostile-lineage": f"/runs/{run_id}/lineage",
    }
    for name, path in visited.items():
        watched.goto(path)
        page.locator("details").evaluate_all("all => all.forEach(d => { d.open = true; })")
        page.wait_for_timeout(300)  # time for anything that would load or run
        assert page.locator("script").count() == 1  # the dashboard's own
        assert page.locator("img, link[href*='evil'], a[href^='javascript:']").count() == 0
        if name in ("hostile-calls", "hostile-improver"):
            text = page.locator("main").inner_text()
            assert shown in text and "onerror=\"alert('xss-img')\"" in text and "\\x1b[31mRED-ANSI" in text
            watched.shot(name)
    assert watched.errors == []  # a blocked inline script or resource would show here as a CSP violation


def test_the_security_headers_reach_the_browser(watched: Watched) -> None:
    headers = watched.goto("/").all_headers()
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


# --- live updates ------------------------------------------------------------------------------


def iteration(number: int, improver: str, value: float) -> dict[str, Any]:
    return {"iteration": number, "improver_hash": improver, "meta_utility_val": value, "meta_utility_test": value / 2,
            "accepted": True}  # fmt: skip


def test_a_run_being_written_updates_the_open_page_across_its_process_killed_and_resumed(
    browser: Any, tmp_path: Path
) -> None:
    """A process records the run and is killed; this one takes it over (as `run --resume` does) and writes on."""
    store = tmp_path / "live.sqlite"
    starter = (
        "import sys, time\nfrom pathlib import Path\nfrom selftaught.store.run_store import RunStore\n"
        "store = RunStore(Path(sys.argv[1]))\n"
        "run = store.create_run(command='run', task='parity_noise', model='scripted:x', seed=0, config={}, options={})\n"
        "improver = store.save_program('def improve_algorithm(s, u, m):\\n    return s\\n', 'improver')\n"
        "store.record_iteration(run, {'iteration': 0, 'improver_hash': improver, 'meta_utility_val': 0.25,"
        " 'meta_utility_test': 0.125, 'accepted': True})\n"
        "print(run, improver, flush=True)\ntime.sleep(600)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", starter, str(store)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        run_id, improver = writer.stdout.readline().split()
        with DashboardServer(store) as server:
            page = Watched(browser, f"http://127.0.0.1:{server.port}")
            page.goto(f"/runs/{run_id}")
            status, rows = page.page.locator("#run-status"), page.page.locator("#iterations tbody tr")
            assert status.inner_text() == "running" and rows.count() == 1
            page.page.evaluate("window.notReloaded = true")
            listed = page.context.new_page()  # the runs list, open beside it with the run ticked for comparing
            listed.goto(f"{page.base}/")
            listed.check(f"input[value='{run_id}']")

            writer.send_signal(signal.SIGKILL)
            writer.wait()
            sync_api.expect(status).to_have_text("killed", timeout=LIVE_TIMEOUT_MS)
            sync_api.expect(listed.locator("table.runs .status")).to_have_text("killed", timeout=LIVE_TIMEOUT_MS)
            assert listed.is_checked(f"input[value='{run_id}']")  # the list was redrawn; the tick was kept

            recorder = RunStore(store)
            assert recorder.claim_run(run_id, "running", writer.pid)
            sync_api.expect(status).to_have_text("running", timeout=LIVE_TIMEOUT_MS)
            recorder.record_iteration(run_id, iteration(1, improver, 0.5))
            sync_api.expect(rows).to_have_count(2, timeout=LIVE_TIMEOUT_MS)
            assert figure_points(page.page) == store_points(store, run_id)
            recorder.finish_run(run_id, "finished", {})
            recorder.close()
            sync_api.expect(status).to_have_text("finished", timeout=LIVE_TIMEOUT_MS)
            assert page.page.evaluate("window.notReloaded") is True
            assert page.dialogs == [] and page.foreign == []
            page.shot("live")
            page.close()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


RUN_FLAGS = (
    "--cache", "off", "--iterations", "2", "--lm-calls", "2", "--responses-per-call", "2", "--meta-utility-runs", "2",
    "--meta-utility-budget", "2", "--utility-budget", "3", "--seed", "11", "--workers", "2",
)  # fmt: skip


def selftaught(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "selftaught", *arguments]


@pytest.mark.slow
def test_a_real_run_killed_and_resumed_is_followed_by_the_open_page(browser: Any, tmp_path: Path) -> None:
    store = tmp_path / "real.sqlite"
    process = subprocess.Popen(
        selftaught("run", "--model", f"scripted:{IMPROVING}", "--store", str(store), *RUN_FLAGS),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run_id = wait_for_a_run(store)
        with DashboardServer(store) as server:
            page = Watched(browser, f"http://127.0.0.1:{server.port}")
            page.goto(f"/runs/{run_id}")
            page.page.evaluate("window.notReloaded = true")
            rows, status = page.page.locator("#iterations tbody tr"), page.page.locator("#run-status")
            sync_api.expect(rows).to_have_count(1, timeout=30_000)  # iteration 0, shown as it is recorded
            process.send_signal(signal.SIGKILL)
            process.wait()
            sync_api.expect(status).to_have_text("killed", timeout=LIVE_TIMEOUT_MS)
            resumed = subprocess.run(
                selftaught("run", "--resume", run_id, "--store", str(store)), capture_output=True, timeout=300
            )
            assert resumed.returncode == 0, resumed.stderr[-2000:]
            sync_api.expect(status).to_have_text("finished", timeout=LIVE_TIMEOUT_MS)
            sync_api.expect(rows).to_have_count(3, timeout=LIVE_TIMEOUT_MS)
            assert figure_points(page.page) == store_points(store, run_id)
            assert page.page.evaluate("window.notReloaded") is True
            page.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for_a_run(store: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if store.exists():
            try:
                with StoreReader(store) as reader:
                    runs = reader.runs()
                if runs:
                    return str(runs[0]["id"])
            except Exception:  # the schema is still being written
                pass
        time.sleep(0.05)
    raise AssertionError("the run never recorded itself")
