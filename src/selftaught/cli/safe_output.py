"""Printing generated text safely: control and invisible characters made visible, markup never parsed."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

from rich.console import Console, ConsoleOptions, HighlighterType, JustifyMethod, OverflowMethod, RenderableType
from rich.segment import Segment
from rich.style import Style, StyleType
from rich.text import Text

#: Everything but printable ASCII, newline and tab is looked at; most generated text is ASCII, so this is cheap.
_NOT_PLAIN_ASCII = re.compile(r"[^\t\n\x20-\x7e]")

#: Unicode categories a terminal obeys or an editor hides instead of showing: controls (C0, DEL, C1), formats
#: (the bidi overrides and isolates of "Trojan Source", zero-width characters, the BOM), lone surrogates
#: (which cannot even be encoded) and the line and paragraph separators.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: Characters of other categories that show as nothing: Unicode's default-ignorable code points (Hangul
#: fillers, which are valid in Python names, variation selectors, the combining grapheme joiner, tags) and
#: the blank braille pattern.
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x2800, 0x2800),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip


def visible_controls(text: str) -> str:
    """`text` with every control or invisible formatting character written as a Python escape (`\\x1b`, `\\u202e`).

    Newline and tab are kept. Python's own escapes are used so that code stays valid and means the same
    when the character sat in a string literal. Applying it twice changes nothing.
    """
    if not _NOT_PLAIN_ASCII.search(text):
        return text
    # Each distinct character is judged once, at C speed where it can be (every hidden category is unprintable),
    # and only the hidden ones present are replaced: a Python call per non-ASCII character made long prose,
    # CJK or emoji take seconds.
    hidden = {c for c in set(text) if not c.isprintable() and unicodedata.category(c) in _HIDDEN_CATEGORIES}
    hidden.difference_update("\t\n")
    hidden.update(_INVISIBLE.findall(text))
    if len(hidden) <= _REPLACED_ONE_BY_ONE:  # a pass at C speed each, however many times they occur
        for character in hidden:
            text = text.replace(character, _escaped(ord(character)))
        return text
    return _character_class("".join(sorted(hidden))).sub(lambda match: _escaped(ord(match.group())), text)


def one_line(text: str) -> str:
    """`text` for a field meant to be one line: `visible_controls`, with newline and tab escaped too.

    A recorded model name holding "\\nwarning: ..." must not print a line of its own that reads as the
    CLI's. Programs and diffs keep their lines: they go through `visible_controls`. Applying it twice
    changes nothing.
    """
    # Newline and tab are the two line-shaping characters `visible_controls` keeps; every other line break
    # (CR, VT, FF, the file/group/record separators, NEL, U+2028, U+2029) it escapes already.
    return visible_controls(text).replace("\n", "\\n").replace("\t", "\\t")


#: Up to this many distinct hidden characters, each is replaced by its own `str.replace`; more take one regex.
_REPLACED_ONE_BY_ONE = 8


def _escaped(code: int) -> str:
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


@lru_cache(maxsize=256)
def _character_class(characters: str) -> re.Pattern[str]:
    """A regex of exactly these (sorted) characters, as ranges of code points: a lone surrogate or NUL included,
    and a class of a few ranges stays fast where one of thousands of single characters is not."""
    ranges: list[list[int]] = []
    for code in map(ord, characters):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return re.compile("[" + "".join(f"\\U{first:08x}-\\U{last:08x}" for first, last in ranges) + "]")


_INVISIBLE = _character_class(
    "".join(chr(code) for first, last in _INVISIBLE_RANGES for code in range(first, last + 1))
)


def safe_text(text: str, style: StyleType = "") -> Text:
    """A rich Text of generated `text`: Text is never parsed as markup, and rich alone would drop BEL and keep ESC."""
    return Text(visible_controls(text), style=style)


class SafeConsole(Console):
    """A Console that cannot be driven by what it prints.

    Strings are never parsed as markup or emoji codes, whatever `markup=` a caller passes: a class named
    `X[/bogus]` would crash the parser, `[link=...]` would plant a link. The CLI's own styling uses Text
    and styles instead. Every segment rendered, whoever built the renderable, has its controls made
    visible, so a Text or Syntax built from generated text without `visible_controls` still cannot send
    an escape sequence to the terminal.
    """

    def render_str(
        self,
        text: str,
        *,
        style: str | Style = "",
        justify: JustifyMethod | None = None,
        overflow: OverflowMethod | None = None,
        emoji: bool | None = None,
        markup: bool | None = None,
        highlight: bool | None = None,
        highlighter: HighlighterType | None = None,
    ) -> Text:
        return super().render_str(
            visible_controls(text),
            style=style,
            justify=justify,
            overflow=overflow,
            emoji=False,
            markup=False,
            highlight=highlight,
            highlighter=highlighter,
        )

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            # Control segments are rich's own cursor movements (Live), never text from outside.
            if segment.control or not _NOT_PLAIN_ASCII.search(segment.text):
                yield segment
            else:
                yield segment._replace(text=visible_controls(segment.text))


def stderr_console() -> SafeConsole:
    return SafeConsole(stderr=True, highlight=False)
