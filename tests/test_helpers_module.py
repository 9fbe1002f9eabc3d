"""The `helpers.extract_code` that generated improvers import."""

from __future__ import annotations

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
