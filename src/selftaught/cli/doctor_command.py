"""`selftaught doctor`: which sandbox layers are active here, what is missing, and what a probe child could do."""

from __future__ import annotations

import sys

import click
from rich.table import Table
from rich.text import Text

from selftaught.cli.plumbing import json_option, print_json, stdout_console, user_errors
from selftaught.cli.safe_output import safe_text, visible_controls
from selftaught.sandbox.doctor import probe
from selftaught.sandbox.launcher import Launcher
from selftaught.sandbox.policy import LAYERS, OPTIONAL_LAYERS, SandboxPolicy, required_layers


@click.command("doctor")
@json_option
@user_errors
def doctor_command(as_json: bool) -> None:
    """Show which isolation layers generated code runs under on this machine.

    Starts the fork server and one confined probe child, which reports the layers it could not
    apply and tries to escape (open a socket, read the host's environment, write outside its
    scratch directory, fork, signal the host), then lists each promise of the sandbox and whether
    the layers active here keep it. Exits 1 when strict mode would refuse to run here.
    """
    launcher = Launcher(SandboxPolicy())
    try:
        launcher.start()
        report = probe(launcher)
    finally:
        launcher.close()
    strict_ok = not report.missing_required and all(report.checks.values()) and bool(report.checks)
    if as_json:
        print_json(
            {
                "layers": report.layers,
                "required_for_strict": list(required_layers()),
                "checks": {name: "blocked" if blocked else "NOT BLOCKED" for name, blocked in report.checks.items()},
                "guarantees": report.guarantees,
                "strict_available": strict_ok,
                "problem": report.problem,
            }
        )
    else:
        console = stdout_console()
        layers = Table(title="sandbox layers")
        layers.add_column("layer")
        layers.add_column("state")
        layers.add_column("stops")
        for name, state in report.layers.items():
            style = "green" if state.startswith("active") else "dim" if state.startswith("not needed") else "red"
            layers.add_row(name, safe_text(state, style), {**LAYERS, **OPTIONAL_LAYERS}[name])
        console.print(layers)
        checks = Table(title="a confined probe child tried to")
        checks.add_column("attempt")
        checks.add_column("result")
        for name, blocked in report.checks.items():
            checks.add_row(name, Text("blocked", "green") if blocked else Text("NOT BLOCKED", "red"))
        console.print(checks)
        promises = Table(title="what holds here")
        promises.add_column("promise")
        promises.add_column("state")
        for promise, state in report.guarantees.items():
            promises.add_row(promise, Text(state, "green" if state == "holds" else "yellow"))
        console.print(promises)
        if report.problem:
            console.print(Text.assemble(("the probe failed:", "red"), " ", visible_controls(report.problem)))
        console.print(
            "strict mode is available here" if strict_ok else Text("strict mode would refuse to run here", "red")
        )
    if not strict_ok:
        sys.exit(1)
