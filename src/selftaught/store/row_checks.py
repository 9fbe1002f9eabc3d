"""What a store's row must be to be read: its columns' types, UTF-8 text, finite numbers, the JSON shapes readers need.

A SQLite column holds a value of any type, whatever its declared one, and a store file may be
damaged or someone else's. The reader (`selftaught.store.reading`) and `import`
(`selftaught.archive.checks`) check every row they take against the schema selftaught writes
(`selftaught.store.schema`), here, and decode its JSON columns on the way.
"""

from __future__ import annotations

import functools
import json
import math
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

from selftaught.store.schema import MIGRATIONS

#: A column's declared type and whether it is NOT NULL.
Column = tuple[str, bool]

_TYPES: dict[str, tuple[type, ...]] = {"TEXT": (str,), "INTEGER": (int,), "REAL": (float, int)}
_TYPE_NAMES = {"TEXT": "text", "INTEGER": "a whole number", "REAL": "a number"}
_VALUE_NAMES = {str: "text", int: "a whole number", float: "a number", bytes: "a blob"}
#: The (declared type, Python type) pairs of a value as SQLite returns it that need no more look.
_USUAL = {("TEXT", str), ("INTEGER", int), ("REAL", float), ("REAL", int)}


class _NotUtf8:
    """What a text value that is not UTF-8 reads as (`decoded_text`): the row checks refuse it."""

    def __str__(self) -> str:
        return "(not UTF-8)"


NOT_UTF8 = _NotUtf8()


def decoded_text(data: bytes) -> str | _NotUtf8:
    """A connection's `text_factory`: the text, or NOT_UTF8 (never an exception in the middle of a fetch)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return NOT_UTF8


@functools.cache
def table_columns() -> dict[str, dict[str, Column]]:
    """Each table of the schema selftaught writes, and its columns: read from the migrations themselves."""
    connection = sqlite3.connect(":memory:")
    try:
        for _, script in MIGRATIONS:
            connection.executescript(script)
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            table: {
                name: (kind, bool(not_null))
                for _, name, kind, not_null, *_ in connection.execute(f"PRAGMA table_info({table})")
            }
            for table in tables
        }
    finally:
        connection.close()


# --- the JSON columns' shapes ------------------------------------------------------------------


def _is_object(value: object) -> bool:
    return isinstance(value, dict)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_list_of(check: Callable[[Any], bool]) -> Callable[[object], bool]:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def _has_types(value: dict[str, Any], types: Mapping[str, tuple[type, ...]]) -> bool:
    return all(key not in value or isinstance(value[key], kinds) for key, kinds in types.items())


#: What the commands that read a run take from its options (resuming checks the rest as it rebuilds them).
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "task": (str,),
    "task_kind": (str,),
    "task_hash": (str, type(None)),
    "cache_identity": (str, type(None)),
    "initial_improver_hash": (str, type(None)),
}


def _is_options(value: object) -> bool:
    return isinstance(value, dict) and _has_types(value, _OPTION_TYPES)


def _is_violation(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(item, str) for item in (*value, *value.values()))


def _is_scorer_problem(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and _is_count(value[1])


def _is_request(value: object) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("system"), str)
        and isinstance(value.get("message"), str)
        and _is_count(value.get("n"))
        and _is_number(value.get("temperature"))
        and _is_count(value.get("max_tokens"))
        and "seed" in value
        and (value["seed"] is None or _is_count(value["seed"]))
    )


def _is_event_detail(value: object) -> bool:
    # The ids of improver runs an event names are read as ids (and shifted on import as the rows' own are).
    return isinstance(value, dict) and _is_list_of(_is_count)(value.get("improver_run_ids", []))


#: The JSON columns, and what their value must be (None stays None where the column may be empty).
JSON_SHAPES: dict[tuple[str, str], Callable[[object], bool]] = {
    ("runs", "config"): _is_object,
    ("runs", "options"): _is_options,
    ("runs", "result"): _is_object,
    ("evaluations", "violations"): _is_list_of(_is_violation),
    ("evaluations", "scorer_problems"): _is_list_of(_is_scorer_problem),
    ("lm_calls", "request"): _is_request,
    ("lm_calls", "responses"): _is_list_of(lambda item: isinstance(item, str)),
    ("events", "detail"): _is_event_detail,
}


# --- checking a row ------------------------------------------------------------------------------


def decoded_row(
    table: str | None,
    row: dict[str, Any],
    computed: Mapping[str, Column] | None = None,
    shapes: Mapping[tuple[str, str], Callable[[object], bool]] = JSON_SHAPES,
) -> tuple[str, str] | None:
    """Checks each value of `row` (of `table`, or one of the `computed` columns of a query) and decodes its JSON
    columns (`shapes`, stricter ones for a caller that needs them) in place; the first bad column ("table.column")
    and what is wrong with it, or None."""
    columns = table_columns().get(table or "", {})
    for name, value in row.items():
        declared = columns.get(name) or (computed or {})[name]
        kind = type(value)
        # The usual case first, cheaply: a store's reader checks every value of every row it reads.
        usual = (declared[0], kind) in _USUAL and (kind is not float or math.isfinite(value))
        problem = None if usual else value_problem(value, *declared)
        shape = shapes.get((table or "", name))
        if problem is None and shape is not None and value is not None:
            row[name], problem = _decoded(value, shape)
        if problem is not None:
            return (f"{table}.{name}" if name in columns else name), problem
    return None


def value_problem(value: object, declared: str, not_null: bool) -> str | None:
    """What is wrong with `value` in a column declared `declared`, or None."""
    if value is None:
        return "is empty" if not_null else None
    if value is NOT_UTF8:
        return "is not UTF-8 text"
    if not isinstance(value, _TYPES[declared]):
        return f"holds {_VALUE_NAMES.get(type(value), 'another value')} where {_TYPE_NAMES[declared]} belongs"
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    return None


def _decoded(value: str, shape: Callable[[object], bool]) -> tuple[object, str | None]:
    try:
        decoded = _JSON.decode(value)
    except (ValueError, RecursionError):
        return None, "is not JSON"
    return decoded, None if shape(decoded) else "is not the JSON selftaught records there"


def _refused_constant(name: str) -> float:
    # NaN and Infinity are no JSON: SQLite's JSON functions, and every other reader of a store, refuse them.
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400
        raise ValueError(f"{text[:20]} is too large")
    return number


_JSON = json.JSONDecoder(parse_constant=_refused_constant, parse_float=_finite_float)


def row_name(table: str | None, row: Mapping[str, Any]) -> str:
    """How a message names the row: by its key, cut short (it is whatever the file holds)."""
    if table == "runs" and "id" in row:
        return f"run {_short(row['id'])}"
    if table == "programs" and "hash" in row:
        return f"program {_short(row['hash'])}"
    if "id" in row:
        name = f"row {_short(row['id'])}"
    elif "iteration" in row:
        name = f"iteration {_short(row['iteration'])}"
    else:
        name = "a row"
    return f"{name} of run {_short(row['run_id'])}" if "run_id" in row else name


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:40] + "…"
