"""The `helpers` module that generated improvers import, as in the paper: `from helpers import extract_code`.

It runs inside the sandbox, so it uses the standard library only.
"""

from __future__ import annotations

from typing import overload

FENCE = "```"


def _largest_fenced_block(text: str) -> str | None:
    """The longest fenced code block of `text`, fences removed; None when there is none.

    A fence line with a language tag opens a block (nested blocks stay inside their outer
    block); a bare fence closes the innermost open block, or opens one when none is open.
    A block left open by a truncated response runs to the end of the text.
    """
    largest: list[str] | None = None
    current: list[str] = []
    depth = 0
    for line in text.split("\n"):
        if line.startswith(FENCE):
            is_bare = not line[len(FENCE) :].strip()
            if depth == 0:
                depth, current = 1, []
                continue
            if is_bare:
                depth -= 1
                if depth == 0:
                    if largest is None or len("\n".join(current)) > len("\n".join(largest)):
                        largest = current
                    continue
            else:
                depth += 1
        if depth > 0:
            current.append(line)
    if depth > 0 and current and (largest is None or len("\n".join(current)) > len("\n".join(largest))):
        largest = current
    if largest is None:
        return None
    block = "\n".join(largest).strip("\n")
    return block or None


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
