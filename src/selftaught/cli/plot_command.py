"""`selftaught plot`: meta-utility per iteration, as in the paper's Figure 4."""

from __future__ import annotations

from pathlib import Path

import click

from selftaught.cli.plumbing import open_reader, stdout_console, store_option, user_errors
from selftaught.report.plot import plot_runs
from selftaught.report.views import run_curve


@click.command("plot")
@click.argument("run_ids", nargs=-1, required=True)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="A .png or .svg file."
)
@click.option(
    "--title", default=None, help="The figure's title, taken literally. Default: the run (or how many), task and model."
)
@click.option(
    "--y-from-zero", is_flag=True, help="Start the y-axis at 0, so that a small change does not look like a big one."
)
@store_option
@user_errors
def plot_command(run_ids: tuple[str, ...], output: Path, title: str | None, y_from_zero: bool, store: Path) -> None:
    """Plot the validation and test meta-utility per iteration of one or more runs.

    Several RUN_IDS are drawn thin, with their mean (and its standard error) in bold. Needs
    matplotlib: pip install 'selftaught[plot]'.
    """
    with open_reader(store) as reader:
        curves = [run_curve(reader, run_id) for run_id in run_ids]
    plot_runs(curves, output, title=title, y_from_zero=y_from_zero)
    stdout_console().print(f"wrote {output}")
