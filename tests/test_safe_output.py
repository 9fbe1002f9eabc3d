"""The one sanitizer for printed generated text, and the console the CLI prints with."""

from __future__ import annotations

import io
import time
import unicodedata

import pytest
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from selftaught.cli import safe_output
from selftaught.cli.safe_output import SafeConsole, safe_text, visible_controls


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # set the terminal title
        ("\x1b[2J", "\\x1b[2J"),  # clear the screen
        ("\x00\x08\x0b\x0c\x0d\x1f", "\\x00\\x08\\x0b\\x0c\\x0d\\x1f"),  # the rest of C0, carriage return too
        ("\x7f", "\\x7f"),  # DEL
        ("\x80\x85\x9b\x9f", "\\x80\\x85\\x9b\\x9f"),  # C1, CSI among them
        ("\u202a\u202b\u202c\u202d\u202e", "\\u202a\\u202b\\u202c\\u202d\\u202e"),  # bidi embeddings, overrides
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),  # bidi isolates
        ("\u200b\u200c\u200d\u200e\u200f", "\\u200b\\u200c\\u200d\\u200e\\u200f"),  # zero-width, direction marks
        ("\u2028\u2029", "\\u2028\\u2029"),  # line and paragraph separators
        ("\ufeff", "\\ufeff"),  # byte order mark, zero-width no-break space
        ("\U000e0041", "\\U000e0041"),  # a tag character: invisible ASCII smuggled in text
        ("\udc80", "\\udc80"),  # a lone surrogate, as surrogateescape leaves undecodable bytes
    ],
)
def test_every_class_of_hidden_character_becomes_a_visible_escape(raw: str, shown: str) -> None:
    assert visible_controls(f"a{raw}b") == f"a{shown}b"


def test_ordinary_code_and_text_pass_unchanged() -> None:
    code = 'def f(x):\n\tif x > 1:  # café, ×2, π, 日本語, 👍\n\t\treturn {"a": [1, 2]}\n    return "\\x1b"\n'
    assert visible_controls(code) == code


def test_markup_is_left_as_text_for_the_console_not_to_parse() -> None:
    for markup in ("[bold]x[/bold]", "[/bogus]", "[link=javascript:alert(1)]x[/link]"):
        assert visible_controls(markup) == markup


def test_escaped_text_stays_valid_python_with_the_same_value() -> None:
    source = 'value = "\x1b[2J\u202e\x07"\n'
    namespace: dict[str, str] = {}
    exec(visible_controls(source), namespace)
    assert namespace["value"] == "\x1b[2J\u202e\x07"


def test_escaping_twice_changes_nothing() -> None:
    once = visible_controls("\x1b]0;t\x07\u202e")
    assert visible_controls(once) == once


def test_safe_text_keeps_what_rich_would_drop() -> None:
    # rich's Text silently removes BEL and keeps ESC; both must be seen.
    text = safe_text("a\x07b\x1bc", style="red")
    assert text.plain == "a\\x07b\\x1bc" and str(text.style) == "red"


def printed(*renderables: object, markup: bool | None = None) -> str:
    console = SafeConsole(file=io.StringIO(), width=100, color_system=None)
    console.print(*renderables, markup=markup)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


HOSTILE = "X[/bogus] [bold]b[/bold] [link=javascript:alert(1)]x[/link] :smile: \x1b]0;pwned\x07\x1b[2J\u202e"


def assert_shown_not_obeyed(output: str) -> None:
    assert "\x1b" not in output and "\x07" not in output and "\u202e" not in output
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\u202e" in output


@pytest.mark.parametrize("markup", [None, True, False])
def test_the_console_never_parses_markup_or_emoji_codes(markup: bool | None) -> None:
    output = printed(HOSTILE, markup=markup)
    assert "X[/bogus] [bold]b[/bold] [link=javascript:alert(1)]x[/link] :smile:" in output
    assert_shown_not_obeyed(output)


def test_table_cells_titles_and_captions_are_printed_as_written() -> None:
    table = Table(title=HOSTILE, caption=HOSTILE)
    table.add_column(HOSTILE)
    table.add_row(HOSTILE)
    output = printed(table)
    assert output.count("X[/bogus]") == 4
    assert_shown_not_obeyed(output.replace("\n", ""))


def test_text_and_syntax_built_without_the_sanitizer_still_cannot_reach_the_terminal() -> None:
    for renderable in (Text("\x1b]0;pwned\x1b[2J\u202e"), Syntax('x = "\x1b]0;pwned\x1b[2J\u202e"', "python")):
        output = printed(renderable)
        assert "\x1b" not in output and "\u202e" not in output
        assert "\\x1b]0;pwned\\x1b[2J\\u202e" in output


def test_the_consoles_own_styles_still_reach_a_color_terminal() -> None:
    console = SafeConsole(file=io.StringIO(), width=100, color_system="standard", force_terminal=True)
    console.print(Text.assemble(("error: ", "bold red"), visible_controls("\x1b[2J")))
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[1;31merror: " in output and "\\x1b[2J" in output and "\x1b[2J" not in output


def _per_character(text: str) -> str:
    """The definition `visible_controls` implements: each character judged on its own."""

    def shown(character: str) -> str:
        code = ord(character)
        invisible = any(first <= code <= last for first, last in safe_output._INVISIBLE_RANGES)
        if character in "\t\n" or not (invisible or unicodedata.category(character) in safe_output._HIDDEN_CATEGORIES):
            return character
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"

    return "".join(map(shown, text))


@pytest.mark.slow
def test_every_code_point_is_shown_as_its_own_judgement_says() -> None:
    every = "".join(map(chr, range(0x110000)))
    assert visible_controls(every) == _per_character(every)
    for sample in ("é\x1b" * 50, "\u200b" * 3 + "a\u202eb\x00", "".join(map(chr, range(0x2000, 0x2070))) * 2):
        assert visible_controls(sample) == _per_character(sample)


def test_long_non_ascii_text_is_checked_at_c_speed() -> None:
    """A Python call per non-ASCII character made 240,000 characters of prose take a second (the dashboard's calls)."""
    prose = "é" * 1_000_000 + "漢字" * 250_000
    started = time.perf_counter()
    assert visible_controls(prose) == prose
    assert time.perf_counter() - started < 0.5
