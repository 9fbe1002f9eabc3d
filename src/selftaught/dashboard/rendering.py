"""The pages' templates: Jinja with autoescaping, every value shown inert, and the addresses pages link to.

Every filter takes any value a record may hold, and every address is under the server's secret prefix
when it has one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from selftaught.cli.safe_output import one_line, visible_controls
from selftaught.dashboard import fields
from selftaught.dashboard.reader import run_segment

HERE = Path(__file__).resolve().parent


def template_environment() -> Environment:
    """Jinja with autoescaping on for every template, and every value shown with its control characters visible.

    Each filter takes any value a record may hold: a number where text belongs, text where a number does,
    shows as "malformed record" rather than failing the page.
    """
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        finalize=_visible,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        line=lambda value: one_line(str(value)),
        score=lambda value: fields.formatted(value, ".3f"),
        usd=_usd,
        seconds=lambda value: fields.formatted(value, ".2f"),
        short=lambda value: "" if value is None else str(value)[:12],
        stamp=fields.stamp,
        percent=_percent,
        rate=lambda value: fields.formatted(value, ".2%"),
        json=fields.json_text,
    )
    environment.tests["malformed"] = lambda value: isinstance(value, fields.Malformed)
    return environment


def _usd(value: Any) -> str:
    shown = fields.formatted(value, ".4f")
    return f"${shown}" if isinstance(fields.number(value), int | float) else shown


def _percent(value: Any) -> str:
    number = fields.finite(value)
    return fields.formatted(value if number is None else number * 100, ".1f")


def _visible(value: Any) -> Any:
    """Escape sequences, bidi overrides and invisible characters shown as text (Markup is the templates' own)."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible_controls(value)
    return value


class Links:
    """The addresses a page links to, under `base` (the server's secret prefix, or nothing)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def to(self, path: str) -> str:
        return self.base + path

    def run(self, run_id: Any, tail: str = "") -> str:
        """A run's page (or one of its pages: `tail`), whatever its id holds."""
        return f"{self.base}/runs/{run_segment(run_id)}{tail}"

    def version(self, run_id: Any) -> str:
        """What a run's live region polls."""
        return f"{self.base}/api/runs/{run_segment(run_id)}/version"

    def program(self, run_id: Any, program_hash: Any, kind: str = "programs") -> str | None:
        """A program's page (`kind`: programs or improvers); None for a hash no program can have."""
        if not fields.is_program_hash(program_hash):
            return None
        return self.run(run_id, f"/{kind}/{program_hash}")
