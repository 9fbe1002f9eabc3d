"""The boundary between a record's values and a page: each value as the type the page needs, or `MALFORMED`.

A store may come from anywhere (an imported archive, a file someone shares, a damaged disk), so a page
never trusts a value's type or shape: a date that does not parse, a sum that overflows, a result whose
fields are not what the command writes, each shows as "malformed record" where it would have appeared,
and the rest of the page is drawn.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final


class Malformed:
    """A value that is not what its column or field holds when selftaught writes it; shown as "malformed record"."""

    def __str__(self) -> str:
        return "malformed record"

    __repr__ = __str__

    def __bool__(self) -> bool:
        return False


MALFORMED: Final = Malformed()
_PROGRAM_HASH = re.compile(r"[0-9a-f]{64}")
#: How much of a value shown as JSON (settings, event details) a page shows at most.
JSON_SHOWN = 2_000


def number(value: Any) -> float | int | Malformed | None:
    """A number as recorded (None stays None: not recorded); anything else is malformed."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return MALFORMED
    return value


def finite(value: Any) -> float | None:
    """A finite number as a float, for arithmetic; None for anything else (missing, malformed, NaN, infinite)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        as_float = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return as_float if math.isfinite(as_float) else None


def count(value: Any) -> int:
    """A count recorded as a non-negative integer; 0 for anything else."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def is_program_hash(value: Any) -> bool:
    """Whether a value is a program's hash as the store keys programs: 64 lowercase hex digits."""
    return isinstance(value, str) and _PROGRAM_HASH.fullmatch(value) is not None


def text(value: Any) -> str | Malformed | None:
    """Text as recorded (None stays None); anything else is malformed."""
    if value is None or isinstance(value, str):
        return value
    return MALFORMED


def mapping(value: Any) -> dict[str, Any]:
    """A JSON object as recorded; an empty one for anything else (see `is_mapping` to tell them apart)."""
    return value if isinstance(value, dict) else {}


def sequence(value: Any) -> list[Any]:
    """A JSON array as recorded; an empty one for anything else."""
    return value if isinstance(value, list) else []


def texts(value: Any) -> list[str]:
    """A JSON array of strings, with anything else in it shown as malformed."""
    return [item if isinstance(item, str) else str(MALFORMED) for item in sequence(value)]


def mean(values: Iterable[Any]) -> float | Malformed | None:
    """The mean of finite numbers (None for none); malformed when one is not, or their sum overflows."""
    given = list(values)
    numbers = [number for number in map(finite, given) if number is not None]
    if not given:
        return None
    if len(numbers) < len(given):
        return MALFORMED
    try:
        return math.fsum(numbers) / len(numbers)
    except OverflowError:  # fsum raises it rather than return infinity
        return MALFORMED


def moment(value: Any) -> datetime | None:
    """A timestamp with its offset, as selftaught writes them; None for anything else (unparsable, or naive)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def stamp(value: Any) -> str:
    """A timestamp to the second, for a page: "–" when not recorded, the text itself when it does not parse."""
    if value is None or value == "":
        return "–"
    if not isinstance(value, str):
        return str(MALFORMED)
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def json_text(value: Any, limit: int = JSON_SHOWN) -> str:
    """A value as JSON, cut at `limit` characters; malformed when it cannot be written (nested beyond the stack)."""
    try:
        written = json.dumps(value, ensure_ascii=False, default=str)
    except (RecursionError, ValueError, TypeError):
        return str(MALFORMED)
    return written if len(written) <= limit else written[:limit] + f"… ({len(written):,} characters)"


def formatted(value: Any, spec: str, missing: str = "–") -> str:
    """A number written with a format spec (`.3f`); `missing` when not recorded; malformed for anything else."""
    if value is None:
        return missing
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(MALFORMED)
    try:
        return format(value, spec)
    except (ValueError, OverflowError):
        return str(MALFORMED)
