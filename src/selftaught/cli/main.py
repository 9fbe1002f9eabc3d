"""The `selftaught` command line: one small module per command."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable

import click
from rich.text import Text

from selftaught.cli.safe_output import stderr_console, visible_controls
from selftaught.stop_signals import stop_on_signals
from selftaught.version import __version__

#: Every command: the module that defines it, the function's name, and the line `--help` shows for it.
#: A command's module (and what it imports: the sandbox, the store, numpy, model SDKs) loads only
#: when that command runs, so `--help` and `--version` start in a fraction of the time.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "audit": (
        "audit_command", "audit_command",
        "Report what the improvers and solutions of a run tried, hacked and how they work.",
    ),
    "doctor": ("doctor_command", "doctor_command", "Show which isolation layers generated code runs under on this machine."),
    "experiment": ("experiment_command", "experiment_command", "The paper's experiments, each recorded as a run in the store."),
    "export": (
        "archive_commands", "export_command",
        "Write a run, its programs and the responses it received to one .tar.gz file.",
    ),
    "import": (
        "archive_commands", "import_command",
        "Add a run exported with `selftaught export` to the store, and its responses to the cache.",
    ),
    "improve": (
        "improve_command", "improve_command",
        "Run an improver once on a task: it gets the task's solution, the utility and the language model.",
    ),
    "meta-utility": (
        "meta_utility_command", "meta_utility_command",
        "Compute the meta-utility of an improver: its mean utility over several fresh runs on the task.",
    ),
    "models": (
        "models_command", "models_command",
        "List the language-model backends and the spec that selects each, or check that one model answers.",
    ),
    "plot": ("plot_command", "plot_command", "Plot the validation and test meta-utility per iteration of one or more runs."),
    "run": ("run_command", "run_command", "Run STOP: the improver improves itself for T iterations, scored by the meta-utility."),
    "runs": ("runs_command", "runs_command", "List the runs in the store, oldest first, with their status."),
    "show": ("show_command", "show_command", "Show a recorded run: its options, status, cost and meta-utility per iteration."),
    "tasks": (
        "tasks_command", "tasks_command",
        "List the tasks (built-in and from plugins): instances per split and the time limit per instance.",
    ),
    "transfer": ("transfer_command", "transfer_command", "Apply an improver, unchanged, to other tasks: the paper's Table 1."),
    "ui": (
        "ui_command", "ui_command",
        "Serve a web dashboard of the store's runs, read-only: Figure 4, lineage, calls, transfer.",
    ),
}  # fmt: skip


class LazyGroup(click.Group):
    """A group whose commands are imported when one is run or asked for its help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, function, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(f"selftaught.cli.{module}"), function)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        # Shortened as click shortens a command's own help, without importing the command.
        rows = [
            (name, click.Command(name, help=COMMANDS[name][2]).get_short_help_str(limit))
            for name in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="selftaught")
def cli() -> None:
    """selftaught — STOP, the Self-Taught Optimizer.

    An improver asks a language model for better versions of a program and keeps the best by a
    utility; run on its own source, scored by a meta-utility, it improves itself. All generated
    code runs in sandboxed child processes; budgets and scores live in this process.

    Start with `selftaught run` (the loop on the embedded model) or `selftaught improve`.
    """


def _abort_launchers() -> None:
    """Ends every sandboxed child, if a command started any (no import in a signal's path)."""
    launcher = sys.modules.get("selftaught.sandbox.launcher")
    if launcher is not None:
        abort: Callable[[], None] = launcher.abort_every_launcher
        abort()


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
    stop_on_signals(on_stop=_abort_launchers)
    cli()
