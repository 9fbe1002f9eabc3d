"""`--dry-run`: a command's worst-case spending, printed before (instead of) anything is paid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from selftaught.cli.plumbing import print_json, stdout_console
from selftaught.loop.estimate import CostEstimate


def dry_run_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--dry-run",
        is_flag=True,
        help="Print the worst-case language-model calls, responses, tokens and USD of this command and stop: "
        "no model is called, nothing is recorded.",
    )(function)


def show_estimate(estimate: CostEstimate, as_json: bool) -> None:
    if as_json:
        print_json(estimate.as_dict())
    else:
        stdout_console().print(
            f"{estimate.command} · {', '.join(estimate.tasks)} · {estimate.model} · profile {estimate.profile}",
            soft_wrap=True,
        )
        stdout_console().print(estimate.summary(), soft_wrap=True)
