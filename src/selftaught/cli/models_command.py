"""`selftaught models`: the language-model backends and how to name them."""

from __future__ import annotations

import click
from rich.table import Table

from selftaught.cli.options import json_option, print_json, stdout_console
from selftaught.llm.registry import registered_backends


@click.command("models")
@json_option
def models_command(as_json: bool) -> None:
    """List the language-model backends and the spec that selects each."""
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
