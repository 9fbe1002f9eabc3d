"""The generated parts of docs/: the command-line reference (cli.md) and the store's schema (in records.md).

    python -m selftaught.cli.reference > docs/cli.md     # the command-line reference alone
    python -m selftaught.cli.reference --update docs     # cli.md and the schema block of records.md

tests/test_docs.py fails when either differs from what this module produces.
"""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import click

#: The width help is wrapped at, whatever the terminal: the page must not depend on who generated it.
WIDTH = 100
REGENERATE = "python -m selftaught.cli.reference --update docs"
#: The lines around the part of docs/records.md that is generated; the prose around them is written by hand.
SCHEMA_BEGIN = "<!-- generated: schema -->"
SCHEMA_END = "<!-- end generated -->"

_HEADER = f"""\
# Command-line reference

<!-- Generated from the commands' own --help by `{REGENERATE}`; do not edit by hand. -->

Every command and subcommand of `selftaught`, with the text its `--help` prints. What the commands
do in depth, their JSON output and their exit codes are in [running.md](running.md).
"""


def _helps(command: click.Command, name: str, parent: click.Context | None) -> Iterator[tuple[str, str]]:
    """(command path, help text) of `command` and, for a group, of every subcommand below it, in order."""
    # The command's own settings (`-h` as well as `--help`), as click's make_context applies them.
    settings = {**command.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    context = click.Context(command, info_name=name, parent=parent, **settings)
    yield context.command_path, command.get_help(context)
    if isinstance(command, click.Group):
        for sub_name in command.list_commands(context):
            sub = command.get_command(context, sub_name)
            if sub is not None and not sub.hidden:
                yield from _helps(sub, sub_name, context)


def cli_markdown() -> str:
    """The whole of docs/cli.md."""
    from selftaught.cli.main import cli

    sections = [_HEADER]
    for path, text in _helps(cli, "selftaught", None):
        sections.append(f"## `{path}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(sections)


def _migrated_database() -> tuple[sqlite3.Connection, list[str]]:
    """An in-memory database with every migration applied, and the migrations' names in order."""
    from selftaught.store.migrations import apply_migrations
    from selftaught.store.schema import MIGRATIONS

    connection = sqlite3.connect(":memory:")
    apply_migrations(connection)  # as the store applies them, its `migrations` table included
    return connection, [name for name, _ in MIGRATIONS]


def _table_markdown(connection: sqlite3.Connection, table: str) -> str:
    references = {row[3]: f"`{row[2]}.{row[4]}`" for row in connection.execute(f"PRAGMA foreign_key_list({table})")}
    columns = list(connection.execute(f"PRAGMA table_info({table})"))
    primary = "primary key" if sum(1 for column in columns if column[5]) == 1 else "part of the primary key"
    rows = ["| column | type | not null | default | key |", "|---|---|---|---|---|"]
    for _, column, kind, not_null, default, in_primary_key in columns:
        keys = [primary] if in_primary_key else []
        keys += [f"references {references[column]}"] if column in references else []
        shown_default = "" if default is None else f"`{default}`"
        rows.append(f"| `{column}` | {kind} | {'yes' if not_null else ''} | {shown_default} | {', '.join(keys)} |")
    indexes = [
        f"`{name}` ({', '.join(row[2] for row in connection.execute(f'PRAGMA index_info({name})'))})"
        for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL ORDER BY name",
            (table,),
        )
    ]
    lines = [f"### `{table}`", "", *rows]
    if indexes:
        lines += ["", f"Indexes: {', '.join(indexes)}."]
    return "\n".join(lines)


def schema_markdown() -> str:
    """The generated block of docs/records.md: every table's columns, and the named migrations in order."""
    connection, names = _migrated_database()
    tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    sections = [_table_markdown(connection, table) for table in tables]
    connection.close()
    migrations = "\n".join(f"{number}. `{name}`" for number, name in enumerate(names, 1))
    return "\n\n".join([*sections, "The named migrations, in the order they are applied:", migrations]) + "\n"


def with_generated_block(page: str, block: str) -> str:
    """`page` with what lies between the schema markers replaced by `block`."""
    before, begin, rest = page.partition(SCHEMA_BEGIN)
    _, end, after = rest.partition(SCHEMA_END)
    if not begin or not end:
        raise ValueError(f"the page has no {SCHEMA_BEGIN} ... {SCHEMA_END} block")
    return f"{before}{SCHEMA_BEGIN}\n{block}{SCHEMA_END}{after}"


def update(docs: Path) -> None:
    """Rewrites docs/cli.md and the schema block of docs/records.md."""
    (docs / "cli.md").write_text(cli_markdown(), encoding="utf-8")
    records = docs / "records.md"
    records.write_text(with_generated_block(records.read_text(encoding="utf-8"), schema_markdown()), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", type=Path, metavar="DOCS", help="rewrite DOCS/cli.md and DOCS/records.md's schema")
    arguments = parser.parse_args()
    if arguments.update is not None:
        update(arguments.update)
    else:
        print(cli_markdown(), end="")


if __name__ == "__main__":
    main()
