"""`selftaught models`: the language-model backends, how to name them, and a check that one answers."""

from __future__ import annotations

import sys
import time

import click
from rich.table import Table

from selftaught.cli.plumbing import json_option, print_json, stdout_console, user_errors
from selftaught.cli.safe_output import one_line
from selftaught.errors import SelftaughtError
from selftaught.llm.base import ChatMessage, CompletionRequest
from selftaught.llm.registry import create_backend, registered_backends
from selftaught.llm.retry import RetriesRequests, RetryPolicy

CHECK_REQUEST = CompletionRequest(
    messages=(ChatMessage("user", "Reply with the word ok."),), n=1, temperature=0.0, max_tokens=8, seed=0
)
#: A server that refuses the connection is down: the check says so at once, where a run would wait for it.
CHECK_RETRY = RetryPolicy(retries_unreachable=False)


@click.command("models")
@click.option(
    "--check", "spec", default=None, help="Make one tiny request to this model and say what is wrong, if anything."
)
@json_option
@user_errors
def models_command(spec: str | None, as_json: bool) -> None:
    """List the language-model backends and the spec that selects each, or check that one model answers.

    `--check SPEC` exits 1 with the reason (no key, server down, unknown model) when it does not.
    """
    if spec is not None:
        check(spec, as_json)
        return
    backends = registered_backends()
    if as_json:
        print_json([{"prefix": b.prefix, "spec": b.example, "summary": b.summary} for b in backends])
        return
    table = Table(title="language-model backends (--model SPEC)")
    table.add_column("spec")
    table.add_column("what it is")
    for backend in backends:
        table.add_row(backend.example, backend.summary)
    stdout_console().print(table)


def check(spec: str, as_json: bool) -> None:
    started = time.monotonic()
    problem = answer = None
    try:
        backend = create_backend(spec)
        if isinstance(backend, RetriesRequests):
            backend.retry = CHECK_RETRY
        try:
            answer = backend.complete(CHECK_REQUEST).texts[0]
        finally:
            backend.close()
    except SelftaughtError as error:
        problem = str(error).removeprefix(f"{spec}: ")  # the line names the spec already
    seconds = time.monotonic() - started
    if as_json:
        print_json({"spec": spec, "ok": problem is None, "answer": answer, "problem": problem, "seconds": seconds})
    elif problem is None:
        stdout_console().print(f"{spec} answers ({seconds:.1f} s): {answer!r}")
    else:
        # The problem quotes the server's answer, which may hold line breaks: one line per check all the same.
        stdout_console().print(one_line(f"{spec} does not work: {problem}"))
    if problem is not None:
        sys.exit(1)
