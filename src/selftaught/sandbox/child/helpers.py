"""The `helpers` module that generated improvers import, as in the paper: `from helpers import extract_code`.

It runs inside the sandbox, so it uses the standard library only.
"""

from __future__ import annotations

import re
from typing import overload

#: Up to 3 spaces, a run of 3 or more backticks or tildes, then the info string (a language tag, if anything).
_FENCE_LINE = re.compile(r"(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)")


class _Fence:
    """A fence line: its character, how many of them, how far it is indented, and its info string."""

    __slots__ = ("character", "indent", "info", "length")

    def __init__(self, character: str, length: int, indent: int, info: str) -> None:
        self.character = character
        self.length = length
        self.indent = indent
        self.info = info

    def closes(self, opening: _Fence) -> bool:
        """CommonMark's closing fence: the same character, at least as many of them, nothing after them."""
        return self.character == opening.character and self.length >= opening.length and not self.info

    def opens_nested(self, opening: _Fence) -> bool:
        """A fence exactly like the opening one but with a language tag: a nested example, as in an improver whose
        prompt shows ```python ... ``` inside a ```python block. CommonMark would read the example's closing fence
        as the end of the outer block; a model that fenced with a longer fence or with ~~~ never gets here."""
        return self.character == opening.character and self.length == opening.length and bool(self.info)


def _fence_of(line: str) -> _Fence | None:
    match = _FENCE_LINE.fullmatch(line)
    if match is None:
        return None
    fence, info = match["fence"], match["info"]
    if fence[0] == "`" and "`" in info:
        return None  # inline code such as ```x```, not a fence
    return _Fence(fence[0], len(fence), len(match["indent"]), info.strip())


def _without_indent(line: str, indent: int) -> str:
    """The line without up to `indent` leading spaces: the content of an indented fence is indented with it."""
    spaces = len(line) - len(line.lstrip(" "))
    return line[min(spaces, indent) :]


def _fenced_blocks(text: str) -> list[list[str]]:
    """The lines of each fenced block of `text`, fences removed; a block left open runs to the end of the text."""
    blocks: list[list[str]] = []
    opening: _Fence | None = None
    depth = 0
    content: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        fence = _fence_of(line)
        if opening is None:
            if fence is not None:
                opening, depth, content = fence, 1, []
            continue
        if fence is not None and fence.closes(opening):
            depth -= 1
            if depth == 0:
                blocks.append(content)
                opening = None
                continue
        elif fence is not None and fence.opens_nested(opening):
            depth += 1
        content.append(_without_indent(line, opening.indent))
    if opening is not None:
        blocks.append(content)
    return blocks


def _largest_fenced_block(text: str) -> str | None:
    """The longest fenced code block of `text`, fences removed (the first of equally long ones); None when there
    is none, or when it is empty.

    Fences follow Markdown's (CommonMark's) rules: a line of 3 or more backticks or tildes, indented by at most 3
    spaces, optionally followed by a language tag (which, after backticks, holds no backtick); the block ends at a
    fence of the same character, at least as long, with nothing after it, so a model that fences code holding ```
    with ```` or ~~~ gets all of it back. Up to as many spaces as the opening fence is indented are removed from
    each line of the block, and a block left open by a truncated response runs to the end of the text.

    One exception, for what CommonMark cannot express: models fence an improver with ```python although its
    prompt shows ```python ... ``` examples. Inside a block, a fence of the same character and length as the
    opening one that has a language tag opens a nested block, which the next bare fence closes; the nested block
    stays part of the outer one.
    """
    largest: list[str] | None = None
    largest_length = -1
    for block in _fenced_blocks(text):
        # Measured once each: joining the largest again at every comparison made many small blocks quadratic.
        length = sum(map(len, block)) + max(len(block) - 1, 0)
        if length > largest_length:
            largest, largest_length = block, length
    if largest is None:
        return None
    return "\n".join(largest).strip("\n") or None


@overload
def extract_code(text: str) -> str | None: ...
@overload
def extract_code(text: list[str]) -> list[str | None]: ...
def extract_code(text: str | list[str]) -> str | list[str | None] | None:
    """The largest fenced code block of a response, or of each response in a list."""
    if isinstance(text, str):
        return _largest_fenced_block(text)
    if isinstance(text, (list, tuple)):
        return [extract_code(item) if isinstance(item, str) else None for item in text]
    return None
