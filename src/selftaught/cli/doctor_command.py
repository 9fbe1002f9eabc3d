"""`selftaught doctor`: which sandbox layers are active here, what is missing, and what a probe child could do."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table
from rich.text import Text

from selftaught.cli.options import executor_options, refuse_a_needless_ray_address
from selftaught.cli.plumbing import json_option, print_json, stdout_console, user_errors
from selftaught.cli.safe_output import safe_text, visible_controls
from selftaught.sandbox.doctor import probe
from selftaught.sandbox.launcher import Launcher
from selftaught.sandbox.policy import LAYERS, OPTIONAL_LAYERS, SandboxPolicy, required_layers

if TYPE_CHECKING:
    from selftaught.sandbox.ray_node import NodeReport


@click.command("doctor")
@executor_options
@json_option
@user_errors
def doctor_command(as_json: bool, executor: str, ray_address: str | None) -> None:
    """Show which isolation layers generated code runs under on this machine.

    Starts the fork server and one confined probe child, which reports the layers it could not
    apply and tries to escape (open a socket, read the host's environment, write outside its
    scratch directory, fork, signal the host), then lists each promise of the sandbox and whether
    the layers active here keep it. Exits 1 when strict mode would refuse to run here.

    With --executor ray, does so on every node of the Ray cluster (each node's own sandbox, where
    the evaluations of solutions run) and exits 1 when strict mode would refuse any node.
    """
    refuse_a_needless_ray_address(executor, ray_address)
    strict_ok = _cluster_doctor(ray_address, as_json) if executor == "ray" else _this_machine(as_json)
    if not strict_ok:
        sys.exit(1)


def _this_machine(as_json: bool) -> bool:
    launcher = Launcher(SandboxPolicy())
    try:
        launcher.start()
        report = probe(launcher)
    finally:
        launcher.close()
    strict_ok = report.strict_available
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
    return strict_ok


def _cluster_doctor(ray_address: str | None, as_json: bool) -> bool:
    """Probes the sandbox of every node of the Ray cluster; True when strict mode would run on all of them."""
    from selftaught.sandbox.ray_executor import RayJobRunner  # Ray loads only when asked for

    cluster = RayJobRunner(ray_address, SandboxPolicy())
    try:
        reports = cluster.probe_nodes()
    finally:
        cluster.close()
    refused = [report.name for report in reports if not report.strict_available]
    if as_json:
        nodes = [_node_json(report) for report in reports]
        print_json({"executor": "ray", "address": cluster.address, "nodes": nodes, "strict_available": not refused})
        return not refused
    console = stdout_console()
    for report in reports:
        console.print(_node_table(report))
        if report.problem:
            console.print(Text.assemble(("the probe failed:", "red"), " ", visible_controls(report.problem)))
    if refused:
        console.print(Text(f"strict mode would refuse to run on node(s) {', '.join(refused)}", "red"))
    else:
        console.print(f"strict mode is available on every node ({len(reports)})")
    return not refused


def _node_json(report: NodeReport) -> dict[str, Any]:
    return {
        "node": report.node,
        "address": report.address,
        "cpus": report.cpus,
        "layers": report.layers,
        "checks": {name: "blocked" if blocked else "NOT BLOCKED" for name, blocked in report.checks.items()},
        "guarantees": report.guarantees,
        "strict_available": report.strict_available,
        "problem": report.problem,
    }


def _node_table(report: NodeReport) -> Table:
    """A node's layers, and what its probe child tried, in one table."""
    table = Table(title=f"node {report.name} · {report.cpus} CPU{'' if report.cpus == 1 else 's'}")
    table.add_column("layer, or what a confined probe child tried")
    table.add_column("state")
    for name, state in report.layers.items():
        style = "green" if state.startswith("active") else "dim" if state.startswith("not needed") else "red"
        table.add_row(name, safe_text(state, style))
    for name, blocked in report.checks.items():
        table.add_row(safe_text(name), Text("blocked", "green") if blocked else Text("NOT BLOCKED", "red"))
    return table
