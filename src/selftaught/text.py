"""Text from outside the host (children's messages, model servers' answers and errors) made fit to keep."""

from __future__ import annotations


def encodable(text: str) -> str:
    """The text with every lone surrogate replaced by "?".

    JSON may carry one ("\\ud800") and Python decodes it, but UTF-8 cannot hold it: no store, cache,
    file or terminal would take the text.
    """
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")
