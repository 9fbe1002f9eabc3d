"""`selftaught export` and `selftaught import`: a run with its responses, as one .tar.gz file."""

from __future__ import annotations

from pathlib import Path

import click

from selftaught.archive import export_run, import_run
from selftaught.cli.plumbing import json_option, open_reader, print_json, stdout_console, store_option, user_errors
from selftaught.cli.safe_output import stderr_console


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
    for anything the run already asked. A run on a task folder takes the folder's files along
    (not hidden files, nor files over 16 MiB or links out of the folder: it says which it left out).
    """
    with open_reader(store) as reader:
        summary = export_run(reader, run_id, output)
    for note in summary.task_notes:
        stderr_console().print(f"note: {note}", soft_wrap=True, markup=False)
    if as_json:
        print_json(
            {
                "run_id": summary.run_id,
                "file": str(output),
                "lm_calls": summary.lm_calls,
                "responses": summary.responses,
                "evaluations": summary.evaluations,
                "task_folder": str(summary.task_folder) if summary.task_folder else None,
                "task_notes": list(summary.task_notes),
            }
        )
        return
    with_folder = f", and the task folder {summary.task_folder}" if summary.task_folder else ""
    stdout_console().print(
        f"exported run {summary.run_id} to {output}: {summary.lm_calls} language-model calls "
        f"({summary.responses} responses), {summary.evaluations} evaluations{with_folder}",
        soft_wrap=True,
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
    `selftaught run --resume RUN_ID`, unless its model names a server or a file, which whoever
    made the archive chose: replay it then. The run gets this machine's default sandbox (or a
    stricter one it had) and workers; the cache gets the responses of the run's own calls only.
    A run's task folder is restored beside the store, in tasks/, where --replay and --resume
    find it; its task.py runs in selftaught's own process (not in the sandbox) when they do, so
    read it first if the archive is not yours.
    """
    summary = import_run(archive, store, cache_file or store.parent / "cache.sqlite")
    if summary.task_folder is not None:
        stderr_console().print(
            f"note: restored the run's task folder to {summary.task_folder}; its task.py runs unsandboxed in "
            "selftaught's process when the run is replayed or resumed: read it first if the archive is not yours",
            soft_wrap=True,
            markup=False,
        )
    if as_json:
        print_json(
            {
                "run_id": summary.run_id,
                "store": str(store),
                "lm_calls": summary.lm_calls,
                "responses": summary.responses,
                "evaluations": summary.evaluations,
                "task_folder": str(summary.task_folder) if summary.task_folder else None,
            }
        )
        return
    stdout_console().print(
        f"imported run {summary.run_id} into {store}: {summary.lm_calls} language-model calls, "
        f"{summary.evaluations} evaluations; replay it with: selftaught run --replay {summary.run_id}",
        soft_wrap=True,
    )
