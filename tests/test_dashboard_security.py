"""The dashboard's guard without a browser: read-only, GET only, its own Host on loopback, a token elsewhere,
strict headers on every response, nothing served from outside its package and store; and `selftaught ui` itself."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import TEST_PROFILE
from selftaught import api
from selftaught.api import RunOptions
from selftaught.dashboard.app import HERE, create_app, template_environment
from selftaught.dashboard.security import Access
from selftaught.dashboard.server import DashboardServer
from selftaught.llm.cache import CacheMode
from selftaught.store.reading import StoreReader
from selftaught.store.run_store import RunStore

testclient = pytest.importorskip("starlette.testclient", reason="the dashboard's tests need the dev extra")

RESPONDER = Path(__file__).resolve().parent / "responders" / "improving_lpn.py"
PORT = 8321


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("guarded") / "runs.sqlite"
    options = RunOptions(
        model=f"scripted:{RESPONDER}", profile=TEST_PROFILE, seed=3, store=path, cache=CacheMode.OFF, workers=2
    )
    api.run(options)
    return path


def client(store: Path, host: str = f"127.0.0.1:{PORT}", token: str | None = None) -> Any:
    return testclient.TestClient(create_app(store, Access(PORT, token)), base_url=f"http://{host}")


def every_page(store: Path) -> list[str]:
    with StoreReader(store) as reader:
        run = reader.runs()[0]["id"]
        rows = reader.iterations(run)
        solution = reader.improver_runs(run)[0]["solution_hash"]
    improver = rows[-1]["improver_hash"]
    return [
        "/", "/?fragment=1", "/?sort=best_val&dir=asc&status=finished&q=parity", "/api/runs/version",
        f"/runs/{run}", f"/runs/{run}?fragment=1", f"/api/runs/{run}/version", f"/runs/{run}/lineage",
        f"/runs/{run}/lineage?fragment=1", f"/runs/{run}/calls", f"/runs/{run}/calls?page=2", f"/runs/{run}/calls/1",
        f"/runs/{run}/improvers/{improver}", f"/runs/{run}/programs/{solution}", f"/compare?run={run}",
        "/transfer", "/experiments", "/static/dashboard.js", "/static/dashboard.css",
    ]  # fmt: skip


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_every_page_answers_with_the_security_headers_and_leaves_the_store_as_it_was(store: Path) -> None:
    before = digest(store)
    with client(store) as browser:
        for path in [*every_page(store), "/runs/no-such-run", "/runs/x/improvers/nothex"]:
            response = browser.get(path)
            assert response.status_code == (404 if "no-such" in path or "nothex" in path else 200), path
            policy = response.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy, path
            assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"
            if response.headers["content-type"].startswith("text/html"):
                # No script of the page's own: the one script is the package's file (a live region has none).
                ours = [] if "fragment=1" in path else ['<script src="/static/dashboard.js" defer>']
                assert re.findall(r"<script[^>]*>", response.text) == ours, path
    assert digest(store) == before


@pytest.mark.slow
def test_only_get_is_answered(store: Path) -> None:
    with client(store) as browser:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            response = browser.request(method, "/")
            assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"
            assert "content-security-policy" in response.headers


@pytest.mark.slow
@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        (f"127.0.0.1:{PORT}", True),
        (f"localhost:{PORT}", True),
        (f"[::1]:{PORT}", True),
        (f"127.0.0.2:{PORT}", True),  # any loopback address: `--host 127.0.0.2` prints it
        (f"127.1:{PORT}", False),
        (f"[::ffff:127.0.0.1]:{PORT}", False),
        (f"evil.example:{PORT}", False),  # a page of another site whose name now points here (DNS rebinding)
        (f"127.0.0.1:{PORT + 1}", False),
        ("localhost", False),
        (f"localhost.evil.example:{PORT}", False),
    ],
)
def test_on_loopback_only_requests_naming_this_server_are_answered(store: Path, host: str, allowed: bool) -> None:
    with client(store, host=host) as browser:
        assert browser.get("/").status_code == (200 if allowed else 403)


@pytest.mark.slow
def test_static_files_come_from_the_package_only(store: Path) -> None:
    with client(store) as browser:
        for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static/templates"):
            assert browser.get(path).status_code == 404, path
        served = browser.get("/static/dashboard.js")
    assert served.content == (HERE / "static" / "dashboard.js").read_bytes()


@pytest.mark.slow
def test_off_loopback_every_request_needs_the_token_compared_in_constant_time(store: Path) -> None:
    with DashboardServer(store, host="0.0.0.0", port=0) as server:
        assert server.token and server.url.endswith(f"{server.prefix}/?token={server.token}")
        base = f"http://127.0.0.1:{server.port}"
        inside = base + server.prefix
        refused_paths = ("/", "/?token=wrong", f"/?token={server.token[:-1]}", "/static/dashboard.js")
        for refused in [*refused_paths, *(server.prefix + path for path in refused_paths), f"/?token={server.token}"]:
            with pytest.raises(urllib.error.HTTPError) as error:  # the token outside the prefix is refused too
                urllib.request.urlopen(base + refused, timeout=10)
            assert error.value.code == 403, refused
        with urllib.request.urlopen(f"{inside}/?token={server.token}", timeout=10) as answered:
            assert answered.status == 200
            cookie = answered.headers["set-cookie"]
            assert f'href="{server.prefix}/transfer"' in answered.read().decode()  # the pages link under the prefix
        # Browsers send a host's cookies to all its ports: this one goes only where the secret prefix is.
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and f"Path={server.prefix}/" in cookie
        assert len(server.prefix) > 16 and server.token not in server.prefix
        request = urllib.request.Request(f"{inside}/transfer", headers={"Cookie": cookie.split(";")[0]})
        with urllib.request.urlopen(request, timeout=10) as answered:
            assert answered.status == 200
    with DashboardServer(store) as loopback:
        assert loopback.token is None and loopback.url == f"http://127.0.0.1:{loopback.port}/"


def test_a_request_another_site_started_is_refused(tmp_path: Path) -> None:
    """A page elsewhere cannot make the dashboard read the store for it, however cheap or dear the page."""
    with client(tmp_path / "runs.sqlite") as browser:
        for site in ("cross-site", "same-site"):
            refused = browser.get("/", headers={"Sec-Fetch-Site": site})
            assert refused.status_code == 403 and "another site" in refused.text
            assert "content-security-policy" in refused.headers
        for site in ("same-origin", "none"):  # the dashboard's own links, and an address typed or bookmarked
            assert browser.get("/", headers={"Sec-Fetch-Site": site}).status_code == 503  # no store: still answered


def test_an_older_store_is_shown_as_such_and_never_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    RunStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM migrations WHERE name = (SELECT MAX(name) FROM migrations)")
    db.close()
    before = digest(path)
    with client(path) as browser:
        response = browser.get("/")
        version = browser.get("/api/runs/version")
    assert response.status_code == 503 and "written by an older selftaught" in response.text
    assert version.status_code == 503 and version.json()["version"] is None
    assert digest(path) == before
    with client(tmp_path / "missing.sqlite") as browser:
        assert "no run store at" in browser.get("/").text
    assert not (tmp_path / "missing.sqlite").exists()


def test_templates_escape_everything_and_mark_nothing_safe() -> None:
    environment = template_environment()
    assert environment.autoescape is True
    for template in (HERE / "templates").glob("*.html"):
        text = template.read_text()
        assert "|safe" not in text.replace(" ", "") and "autoescape false" not in text, template.name
        assert "<script>" not in text and " style=" not in text and " on" + "click" not in text, template.name
    shown = environment.from_string("{{ value }}").render(value="<b>\x1b[2J\u202e</b>")
    assert shown == "&lt;b&gt;\\x1b[2J\\u202e&lt;/b&gt;"


@pytest.fixture
def ui_process(store: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "selftaught", "ui", "--store", str(store), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield process
    process.terminate()
    process.wait(timeout=20)


@pytest.mark.slow
def test_selftaught_ui_prints_its_address_and_serves_the_store(ui_process: subprocess.Popen[str], store: Path) -> None:
    assert ui_process.stdout is not None
    line = ui_process.stdout.readline()
    url = re.search(r"http://127\.0\.0\.1:\d+/", line)
    assert url and "read-only" in line, line
    with urllib.request.urlopen(url.group(), timeout=20) as answered:
        assert answered.status == 200 and b"Runs" in answered.read()


@pytest.mark.slow
def test_selftaught_ui_on_a_damaged_store_says_so_in_one_line_and_serves(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
    process = subprocess.Popen(
        [sys.executable, "-m", "selftaught", "ui", "--store", str(damaged), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = re.search(r"http://127\.0\.0\.1:\d+/", process.stdout.readline())
        assert url
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(url.group(), timeout=20)
        assert error.value.code == 503 and b"The store cannot be read" in error.value.read()
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=20)
    assert errors.startswith("note: ") and "Traceback" not in errors
