"""selftaught: STOP, the Self-Taught Optimizer — improvers that improve code, and themselves.

The public verbs are imported lazily, so sandboxed children and `--help` stay fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "RunOptions",
    "SelftaughtError",
    "Task",
    "__version__",
    "improve",
    "meta_utility",
    "replay",
    "resume",
    "run",
    "transfer",
]


def __getattr__(name: str) -> Any:
    if name in ("RunOptions", "improve", "meta_utility", "replay", "resume", "run", "transfer"):
        from selftaught import api

        return getattr(api, name)
    if name == "Task":
        from selftaught.tasks.base import Task

        return Task
    if name == "SelftaughtError":
        from selftaught.errors import SelftaughtError

        return SelftaughtError
    raise AttributeError(f"module 'selftaught' has no attribute {name!r}")
