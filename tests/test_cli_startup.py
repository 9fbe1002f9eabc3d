"""`selftaught --help` and `--version` start without loading any command: the lazy command table stays true."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from conftest import STRONG_LPN_SOLUTION, responder_returning
from selftaught import api
from selftaught.api import RunOptions
from selftaught.cli.main import COMMANDS, cli

HEAVY_MODULES = ("numpy", "openai", "anthropic", "llama_cpp", "matplotlib", "sqlite3", "selftaught.api")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_is_where_the_table_says_with_the_help_line_it_shows(name: str) -> None:
    module, function, summary = COMMANDS[name]
    command = getattr(importlib.import_module(f"selftaught.cli.{module}"), function)
    assert isinstance(command, click.Command) and command.name == name
    assert command.get_short_help_str(limit=1000) == summary


def test_every_command_module_is_in_the_table() -> None:
    folder = Path(importlib.import_module("selftaught.cli").__file__ or "").parent
    commands: set[click.Command] = set()
    for path in folder.glob("*.py"):
        module = importlib.import_module(f"selftaught.cli.{path.stem}")
        commands |= {value for value in vars(module).values() if isinstance(value, click.Command) and value is not cli}
    subcommands = {sub for group in commands if isinstance(group, click.Group) for sub in group.commands.values()}
    assert {command.name for command in commands - subcommands} == set(COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("arguments", [["--help"], ["--version"], ["run", "--help"]])
def test_help_and_version_load_only_what_they_show(arguments: list[str]) -> None:
    check = (
        "import sys\nfrom selftaught.cli.main import cli\n"
        f"try:\n    cli({arguments!r})\nexcept SystemExit:\n    pass\n"
        f"print('loaded:', sorted(name for name in {HEAVY_MODULES!r} if name in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60)
    loaded = completed.stdout.strip().splitlines()[-1]
    if arguments[0] == "run":  # a command's own help loads that command, and what it needs
        assert "selftaught.api" in loaded
    else:
        assert loaded == "loaded: []", completed.stdout


@pytest.mark.slow
def test_commands_that_only_read_the_store_load_neither_numpy_nor_the_run_machinery(
    tmp_path: Path, scripted_model: Callable[[str], str], options_for: Callable[..., RunOptions]
) -> None:
    run_id = api.run(options_for(scripted_model(*responder_returning(STRONG_LPN_SOLUTION)))).run_id
    store = str(options_for("unused").store)
    for arguments in (
        ["runs", "--store", store],
        ["show", run_id[:10], "--store", store],
        ["show", run_id, "--store", store, "--json"],
        ["audit", run_id, "--store", store],
        ["export", run_id, "--store", store, "-o", str(tmp_path / "run.tar.gz")],
    ):
        check = (
            "import sys\nfrom selftaught.cli.main import cli\n"
            f"try:\n    cli({arguments!r})\nexcept SystemExit as stop:\n    assert not stop.code, stop.code\n"
            "print('loaded:', sorted(name for name in ('numpy', 'openai', 'anthropic', 'llama_cpp', 'matplotlib',"
            " 'selftaught.api', 'selftaught.sandbox.launcher') if name in sys.modules))\n"
        )
        completed = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
        assert completed.returncode == 0, (arguments, completed.stderr)
        assert completed.stdout.strip().splitlines()[-1] == "loaded: []", arguments
