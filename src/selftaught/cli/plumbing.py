"""What every command shares: --json, --store, safe printing, exit codes and one-line errors.

Commands that only read import this and nothing of the run machinery, so they start without numpy,
the sandbox or model SDKs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.text import Text

from selftaught.cli.safe_output import SafeConsole, one_line, stderr_console
from selftaught.errors import ModelOutage, SelftaughtError
from selftaught.stop_signals import stop_signal
from selftaught.store.migrations import ensure_current_schema
from selftaught.store.reading import StoreReader
from selftaught.store.run_store import DEFAULT_STORE

#: Exit codes: bad input (nothing started), and a command that ran but produced nothing usable.
EXIT_BAD_INPUT = 2
EXIT_NOTHING_PRODUCED = 1
#: A run stopped because its language model could not answer (unreachable, key refused): `--resume` continues it.
EXIT_MODEL_OUTAGE = 3
#: A command stopped by a signal exits this plus the signal's number, as shells report it: 130 after
#: Ctrl-C (SIGINT), 143 after SIGTERM, 129 after SIGHUP.
EXIT_STOPPED_BY_SIGNAL = 128


def store_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """--store for the commands that read recorded runs."""
    return click.option(
        "--store",
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_STORE,
        show_default=True,
        help="SQLite file the runs are recorded in.",
    )(function)


def open_reader(store: Path) -> StoreReader:
    """The store's reader, for a command that only reads: how every such command opens the store.

    A store an older selftaught wrote is upgraded first, as any command of this one leaves it; a
    reader never migrates.
    """
    ensure_current_schema(store)
    return StoreReader(store)


def json_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (progress goes to stderr)."
    )(function)


#: Width of tables written to a pipe or file, where no terminal says how wide to be.
PIPE_WIDTH = 160


def stdout_console() -> SafeConsole:
    """Every command prints through one of these two: generated text shown safely, never parsed as markup.

    Lines are never wrapped by rich (`soft_wrap`): a recorded field padded with spaces would otherwise
    put text of its choosing at the start of a line, where it reads as the CLI's own. Tables still fit
    the width.
    """
    return SafeConsole(highlight=False, width=None if sys.stdout.isatty() else PIPE_WIDTH, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def user_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    """Prints a SelftaughtError as one line and exits non-zero; Ctrl-C, SIGTERM, SIGHUP exit without a traceback.

    For commands that record no run (they read, check or copy): an interruption is only named. The commands
    that record runs use `run_user_errors`, which says what became of the run.
    """
    return _with_user_errors(function, None)


def run_user_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    """`user_errors` for a command that records runs: an interruption also says that its run is kept."""
    return _with_user_errors(function, "any run it started is recorded as interrupted in the store")


def _with_user_errors(function: Callable[..., Any], when_interrupted: str | None) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except SelftaughtError as error:
            # One line even when the error quotes a server's answer or a recorded field holding line breaks.
            stderr_console().print(Text.assemble(("error: ", "bold red"), one_line(str(error))), soft_wrap=True)
            sys.exit(EXIT_MODEL_OUTAGE if isinstance(error, ModelOutage) else EXIT_BAD_INPUT)
        except KeyboardInterrupt as interruption:
            exit_interrupted(interruption, when_interrupted)

    return wrapper


def exit_interrupted(interruption: KeyboardInterrupt, explanation: str | None = None) -> NoReturn:
    """Says which signal stopped the command and what became of its work, then exits 128 + the signal's number."""
    number = stop_signal(interruption)
    message = f"interrupted by {number.name}" + (f"; {explanation}" if explanation else "")
    # After SIGHUP the terminal may be gone: the exit code must not depend on being able to say so.
    with contextlib.suppress(OSError):
        stderr_console().print(message, soft_wrap=True, markup=False)
    sys.exit(EXIT_STOPPED_BY_SIGNAL + number)
