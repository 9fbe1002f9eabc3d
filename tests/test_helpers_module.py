"""The `helpers.extract_code` that generated improvers import."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

from selftaught.loop.seed_improver import SEED_IMPROVER
from selftaught.sandbox.child.helpers import extract_code


def test_takes_the_largest_block_without_fences() -> None:
    text = "idea\n```python\nx = 1\n```\nthen\n```python\ndef f():\n    return 2\n```\n"
    assert extract_code(text) == "def f():\n    return 2"


def test_untagged_and_unclosed_blocks_count() -> None:
    assert extract_code("```\ny = 3\n```") == "y = 3"
    assert extract_code("text\n```python\ndef g():\n    pass") == "def g():\n    pass"


def test_nested_fences_stay_inside_the_outer_block() -> None:
    text = '```python\nmessage = """\n```python\ninner\n```\n"""\n```'
    assert extract_code(text) == 'message = """\n```python\ninner\n```\n"""'


def test_no_code_gives_none_and_lists_map() -> None:
    assert extract_code("no code here") is None
    assert extract_code(["```python\na\n```", "nothing", 5]) == ["a", None, None]  # type: ignore[list-item]


# The seed improver's prompt holds ```python ... ``` itself: every way a model fences it must give it back whole.
IMPROVER = SEED_IMPROVER.rstrip("\n")
FENCINGS = {
    "python": ("```python", "```"),
    "py": ("```py", "```"),
    "bare": ("```", "```"),
    "uppercase": ("```PYTHON", "```"),
    "capitalized": ("```Python", "```"),
    "four_backticks": ("````python", "````"),
    "five_backticks_closed_by_six": ("`````python", "``````"),
    "tildes": ("~~~python", "~~~"),
    "bare_tildes": ("~~~", "~~~"),
    "spaced_tag": ("``` python ", "```  "),
}


def fenced(opening: str, closing: str, indent: str = "") -> str:
    return textwrap.indent(f"{opening}\n{IMPROVER}\n{closing}", indent)


RESPONSES: dict[str, Callable[[str], str]] = {
    "alone": lambda block: block,
    "with_prose": lambda block: (
        f"Idea: sample at several temperatures.\n\n{block}\n\nIt keeps ```extract_code``` as the paper does.\n"
    ),
    "with_a_truncated_second_block": lambda block: f"Here it is:\n{block}\nUsage:\n```python\nimprove_algorithm(",
    "with_crlf": lambda block: f"Here it is:\n{block}\nDone.\n".replace("\n", "\r\n"),
}


@pytest.mark.parametrize("response", RESPONSES.values(), ids=RESPONSES.keys())
@pytest.mark.parametrize(("opening", "closing"), FENCINGS.values(), ids=FENCINGS.keys())
def test_the_seed_improver_comes_back_whole_however_it_is_fenced(
    opening: str, closing: str, response: Callable[[str], str]
) -> None:
    extracted = extract_code(response(fenced(opening, closing)))
    assert extracted == IMPROVER
    ast.parse(extracted)


@pytest.mark.parametrize("indent", [" ", "  ", "   "])
@pytest.mark.parametrize(("opening", "closing"), [("```python", "```"), ("````python", "````"), ("~~~", "~~~")])
def test_an_indented_fence_gives_its_code_back_unindented(indent: str, opening: str, closing: str) -> None:
    extracted = extract_code(f"1. The improver:\n{fenced(opening, closing, indent)}\n2. Done.")
    assert extracted == IMPROVER
    ast.parse(extracted)


def test_only_the_fence_is_unindented_from_code_that_is_less_indented() -> None:
    assert extract_code("   ```python\n  x = 1\nif x:\n      y = 2\n   ```") == "x = 1\nif x:\n   y = 2"


def test_a_fence_indented_four_spaces_is_code_not_a_fence() -> None:
    assert extract_code("    ```python\n    x = 1\n    ```") is None


def test_a_longer_fence_is_not_closed_by_a_shorter_one_inside_it() -> None:
    assert extract_code("````\na = 1\n```\nb = 2\n````\nprose") == "a = 1\n```\nb = 2"
    assert extract_code("````python\na = 1\n```python\nb = 2\n```\n````") == "a = 1\n```python\nb = 2\n```"


def test_a_fence_closes_only_on_its_own_character() -> None:
    assert extract_code("~~~\na = 1\n```\nb = 2\n~~~\nprose") == "a = 1\n```\nb = 2"
    assert extract_code("```\na = 1\n~~~\nb = 2\n```\nprose") == "a = 1\n~~~\nb = 2"


def test_a_fence_with_text_after_it_does_not_close() -> None:
    assert extract_code("`````\na = 1\n```` not yet\nb = 2\n`````") == "a = 1\n```` not yet\nb = 2"


def test_inline_code_in_triple_backticks_is_not_a_fence() -> None:
    assert extract_code("Call ```extract_code``` on it.\nx = 1") is None
    assert extract_code("```x = 1```\n```python\ny = 2\n```") == "y = 2"


def test_a_nested_example_fenced_like_its_block_stays_inside_it() -> None:
    # What CommonMark cannot express: the example's closing ~~~ would end the block.
    text = '~~~python\nm = """\n~~~python\ninner\n~~~\n"""\n~~~\nprose'
    assert extract_code(text) == 'm = """\n~~~python\ninner\n~~~\n"""'


@pytest.mark.slow
def test_many_small_blocks_after_a_large_one_take_linear_work() -> None:
    """The host extracts code from every response: a response crafted to make it quadratic must not stall it.

    Not a timing: the quadratic version needs about an hour for this input, so the generous timeout only
    catches a return of that behaviour.
    """
    script = (
        "from selftaught.sandbox.child.helpers import extract_code\n"
        "big = '```\\n' + 'x\\n' * 500_000 + '```\\n'\n"
        "assert extract_code(big + '```\\n```\\n' * 250_000) == 'x\\n' * 499_999 + 'x'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
