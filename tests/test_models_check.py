"""`models --check` on a server that is down, and server URLs refused when a spec is read, for every command."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from selftaught.cli.main import cli
from selftaught.cli.models_command import CHECK_REQUEST, CHECK_RETRY
from selftaught.errors import BackendError, ModelUnavailable
from selftaught.llm.openai_compatible import DEFAULT_RETRY, OpenAICompatibleBackend
from selftaught.llm.registry import backend_info
from selftaught.llm.retry import RetryPolicy, TransientBackendError, Unreachable, without_credentials


def invoke(*arguments: str) -> Result:
    return CliRunner().invoke(cli, list(arguments), catch_exceptions=False)


def said(result: Result) -> str:
    """The command's output, as one line: the console wraps long lines at its width."""
    return " ".join(result.output.split())


@pytest.fixture
def closed_port() -> int:
    """A port of 127.0.0.1 nothing listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The addresses the client libraries connect to (they connect through `socket.create_connection`)."""
    attempts: list[Any] = []
    connect = socket.create_connection

    def counted(address: Any, *arguments: Any, **keywords: Any) -> socket.socket:
        attempts.append(address)
        return connect(address, *arguments, **keywords)

    monkeypatch.setattr(socket, "create_connection", counted)
    yield attempts


@pytest.fixture(autouse=True)
def no_keys_nor_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_a_refused_connection_fails_the_check_at_the_first_attempt(closed_port: int, connections: list[Any]) -> None:
    url = f"http://127.0.0.1:{closed_port}/v1"
    checked = invoke("models", "--check", f"openai:gpt-4o@{url}")
    assert checked.exit_code == 1
    assert f"does not work: cannot reach the server at {url}: connection refused" in said(checked)
    assert connections == [("127.0.0.1", closed_port)]


def test_a_refused_connection_fails_the_json_check_too(closed_port: int, connections: list[Any]) -> None:
    url = f"http://127.0.0.1:{closed_port}/v1"
    checked = invoke("models", "--check", f"openai:gpt-4o@{url}", "--json")
    assert checked.exit_code == 1
    report = json.loads(checked.stdout)
    assert report["ok"] is False and report["answer"] is None
    assert report["problem"] == f"cannot reach the server at {url}: connection refused"
    assert len(connections) == 1


def test_the_anthropic_check_fails_at_once_too(
    closed_port: int, connections: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    url = f"http://127.0.0.1:{closed_port}"
    checked = invoke("models", "--check", f"anthropic:claude-x@{url}")
    assert checked.exit_code == 1
    assert f"cannot reach the server at {url}: connection refused" in said(checked)
    assert len(connections) == 1


def test_only_the_check_gives_up_on_an_unreachable_server_at_once() -> None:
    unreachable = Unreachable("m: cannot reach the server at http://127.0.0.1:9/v1: connection refused")
    assert not CHECK_RETRY.retries(unreachable)
    assert DEFAULT_RETRY.retries(unreachable) and RetryPolicy().retries(unreachable)
    assert CHECK_RETRY.retries(TransientBackendError("HTTP 503"))  # the check waits out anything else as runs do


@pytest.mark.slow
def test_a_run_still_retries_a_refused_connection(closed_port: int, connections: list[Any]) -> None:
    quick = RetryPolicy(attempts=3, initial_wait_seconds=0.01, max_wait_seconds=0.05)
    url = f"http://127.0.0.1:{closed_port}/v1"
    backend = OpenAICompatibleBackend("openai:m", "m", url, quick)
    with pytest.raises(BackendError, match=rf"cannot reach the server at {url}: connection refused \(after 3"):
        backend.complete(CHECK_REQUEST)
    assert len(connections) == 3


@pytest.mark.slow
def test_the_server_named_in_the_error_shows_no_credentials(closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://user:s3cret@127.0.0.1:{closed_port}/v1")
    checked = invoke("models", "--check", "openai:gpt-4o")
    assert checked.exit_code == 1
    assert f"cannot reach the server at http://127.0.0.1:{closed_port}/v1: connection refused" in said(checked)
    assert "s3cret" not in checked.output
    assert without_credentials("https://a:b@host:1/v1") == "https://host:1/v1"


BAD_URLS = {
    "openai:gpt-4o@localhost:8000/v1": ("has no scheme", "openai:MODEL@http://HOST:PORT/v1"),
    "openai:gpt-4o@127.0.0.1:8000/v1?concurrency=2": ("has no scheme", "openai:MODEL@http://HOST:PORT/v1"),
    "anthropic:claude-x@example.com": ("has no scheme", "anthropic:MODEL@https://HOST[:PORT]"),
    "openai:gpt-4o@ftp://example.com/v1": ("is not http:// or https://", "openai:MODEL@http://HOST:PORT/v1"),
    "openai:gpt-4o@http:///v1": ("has no host", "openai:MODEL@http://HOST:PORT/v1"),
    "openai:gpt-4o@http://example.com:99999/v1": ("has no valid port", "openai:MODEL@http://HOST:PORT/v1"),
    "openai:gpt-4o@": ("no server URL follows the @", "openai:MODEL@http://HOST:PORT/v1"),
    # A password in a spec would be recorded with every run and shown by `runs`, `show` and `export`.
    "openai:gpt-4o@http://alice:S3CRET@example.com/v1": (
        "holds a user name or password",
        "openai:MODEL@http://HOST:PORT/v1",
    ),
    "openai:gpt-4o@alice:S3CRET@example.com/v1": ("holds a user name or password", "openai:MODEL@http://HOST:PORT/v1"),
}


@pytest.mark.parametrize(("spec", "problem"), BAD_URLS.items(), ids=BAD_URLS.keys())
def test_a_server_url_that_is_no_http_url_is_refused_when_the_spec_is_read(spec: str, problem: tuple[str, str]) -> None:
    what, form = problem
    with pytest.raises(ModelUnavailable) as refused:
        backend_info(spec)
    assert what in str(refused.value) and str(refused.value).endswith(f"give the server as {form}")
    assert "S3CRET" not in str(refused.value).removeprefix(spec)


@pytest.mark.parametrize(
    "command",
    [["models", "--check"], ["run", "--dry-run", "--model"], ["improve", "--dry-run", "--model"]],
    ids=["models", "run", "improve"],
)
def test_every_command_refuses_a_url_without_a_scheme(command: list[str], connections: list[Any]) -> None:
    result = invoke(*command, "openai:gpt-4o@localhost:8000/v1")
    assert result.exit_code != 0
    assert "'localhost:8000/v1' has no scheme" in said(result)
    assert "give the server as openai:MODEL@http://HOST:PORT/v1" in said(result)
    assert connections == []


@pytest.mark.parametrize(
    "spec",
    [
        "openai:gpt-4o@http://127.0.0.1:8000/v1",
        "openai:qwen2.5-coder:7b@http://localhost:11434/v1?concurrency=2",
        "openai:gpt-4o@HTTPS://api.example.com/v1",
        "openai:gpt-4o@http://[::1]:8000/v1",
        "anthropic:claude-x@https://api.anthropic.com",
        "openai:gpt-4o",
        "llamacpp:/models/q@4.gguf",  # a path, not a URL
        "scripted:/tmp/respond@1.py",
    ],
)
def test_good_urls_and_backends_without_urls_pass(spec: str) -> None:
    backend_info(spec)
