"""The `selftaught` command line: one small module per command."""

from __future__ import annotations

import logging

import click
from rich.text import Text

from selftaught import __version__
from selftaught.cli.archive_commands import export_command, import_command
from selftaught.cli.audit_command import audit_command
from selftaught.cli.doctor_command import doctor_command
from selftaught.cli.experiment_command import experiment_command
from selftaught.cli.improve_command import improve_command
from selftaught.cli.meta_utility_command import meta_utility_command
from selftaught.cli.models_command import models_command
from selftaught.cli.options import stderr_console
from selftaught.cli.plot_command import plot_command
from selftaught.cli.run_command import run_command
from selftaught.cli.runs_command import runs_command
from selftaught.cli.safe_output import visible_controls
from selftaught.cli.show_command import show_command
from selftaught.cli.tasks_command import tasks_command
from selftaught.cli.transfer_command import transfer_command
from selftaught.sandbox.launcher import abort_every_launcher
from selftaught.stop_signals import stop_on_signals


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="selftaught")
def cli() -> None:
    """selftaught — STOP, the Self-Taught Optimizer.

    An improver asks a language model for better versions of a program and keeps the best by a
    utility; run on its own source, scored by a meta-utility, it improves itself. All generated
    code runs in sandboxed child processes; budgets and scores live in this process.

    Start with `selftaught run` (the loop on the embedded model) or `selftaught improve`.
    """


for command in (
    run_command,
    improve_command,
    meta_utility_command,
    transfer_command,
    runs_command,
    show_command,
    plot_command,
    export_command,
    import_command,
    audit_command,
    experiment_command,
    tasks_command,
    models_command,
    doctor_command,
):
    cli.add_command(command)


class _WarningLine(logging.Handler):
    """Library warnings (a weaker sandbox, a failed probe) as one visible line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        stderr_console().print(
            Text.assemble(("warning: ", "bold yellow"), visible_controls(record.getMessage())), soft_wrap=True
        )


def main() -> None:
    logger = logging.getLogger("selftaught")
    logger.addHandler(_WarningLine(level=logging.WARNING))
    logger.propagate = False
    # Here, not at import: a program using the library decides itself what its signals do.
    stop_on_signals(on_stop=abort_every_launcher)
    cli()
