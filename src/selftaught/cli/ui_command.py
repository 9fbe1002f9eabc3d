"""`selftaught ui`: the read-only web dashboard over a store, served on this machine."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import click

from selftaught.cli.plumbing import stdout_console, store_option, user_errors
from selftaught.cli.safe_output import one_line, stderr_console
from selftaught.errors import SelftaughtError, StoreError

DEFAULT_PORT = 8321


@click.command("ui")
@store_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback requires the token printed at start.",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True, help="Port; 0 picks a free one."
)
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in the default web browser.")
@user_errors
def ui_command(store: Path, host: str, port: int, open_browser: bool) -> None:
    """Serve a web dashboard of the store's runs, read-only: Figure 4, lineage, calls, transfer.

    It reads the store without ever writing to it (a store an older selftaught wrote is shown as
    such, never upgraded), updates the page of a running run every second, and loads nothing from
    the internet. On loopback it answers only to its own name; on any other address every request
    needs the token printed with its address. Ctrl-C stops it.
    """
    try:
        # The web stack loads only for this command: the others start without it.
        from selftaught.dashboard.server import DashboardServer
    except ImportError as missing:
        raise SelftaughtError(f"the dashboard needs its extra ({missing.name}): pip install 'selftaught[ui]'") from None
    from selftaught.store.reading import StoreReader

    try:
        StoreReader(store).close()
    except StoreError as error:
        # Served all the same: the pages say it, and show the runs as soon as the store can be read.
        stderr_console().print(f"note: {one_line(str(error))}", soft_wrap=True, markup=False)
    except Exception as error:  # a damaged file may fail in ways the reader does not name: the pages say it too
        note = f"note: the run store {store} cannot be read ({type(error).__name__}: {error})"
        stderr_console().print(one_line(note), soft_wrap=True, markup=False)
    server = DashboardServer(store, host, port)
    console = stdout_console()
    console.print(f"selftaught dashboard of {store}, read-only: {server.url}", soft_wrap=True, markup=False)
    if server.token:
        console.print("anyone with this address (its token included) can read the store's runs", markup=False)
    if open_browser:
        webbrowser.open(server.url)
    server.serve_forever()
