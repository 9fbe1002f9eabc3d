"""`selftaught export` and `selftaught import`: a run with its responses, as one .tar.gz file."""

from __future__ import annotations

from pathlib import Path

import click

from selftaught.cli.plumbing import json_option, print_json, stdout_console, store_option, user_errors
from selftaught.store.archive import export_run, import_run


@click.command("export")
@click.argument("run_id")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .tar.gz file to write."
)
@store_option
@json_option
@user_errors
def export_command(run_id: str, output: Path, store: Path, as_json: bool) -> None:
    """Write a run, its programs and the responses it received to one .tar.gz file.

    `selftaught import FILE` on another machine adds it to that store; there `selftaught run
    --replay RUN_ID` re-runs it and `--resume` continues it, without a live language-model call
    for anything the run already asked.
    """
    summary = export_run(store, run_id, output)
    if as_json:
        print_json(
            {
                "run_id": summary.run_id,
                "file": str(output),
                "lm_calls": summary.lm_calls,
                "responses": summary.responses,
                "evaluations": summary.evaluations,
            }
        )
        return
    stdout_console().print(
        f"exported run {summary.run_id} to {output}: {summary.lm_calls} language-model calls "
        f"({summary.responses} responses), {summary.evaluations} evaluations",
    )


@click.command("import")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@store_option
@click.option(
    "--cache-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Response cache to add the run's responses to. Default: cache.sqlite beside the store.",
)
@json_option
@user_errors
def import_command(archive: Path, store: Path, cache_file: Path | None, as_json: bool) -> None:
    """Add a run exported with `selftaught export` to the store, and its responses to the cache.

    A run that was still going when exported becomes 'interrupted' here and continues with
    `selftaught run --resume RUN_ID`.
    """
    summary = import_run(archive, store, cache_file or store.parent / "cache.sqlite")
    if as_json:
        print_json(
            {
                "run_id": summary.run_id,
                "store": str(store),
                "lm_calls": summary.lm_calls,
                "responses": summary.responses,
                "evaluations": summary.evaluations,
            }
        )
        return
    stdout_console().print(
        f"imported run {summary.run_id} into {store}: {summary.lm_calls} language-model calls, "
        f"{summary.evaluations} evaluations; replay it with: selftaught run --replay {summary.run_id}",
    )
