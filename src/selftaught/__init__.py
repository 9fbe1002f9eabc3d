"""selftaught: STOP, the Self-Taught Optimizer — improvers that improve code, and themselves.

The public verbs are imported lazily, so sandboxed children and `--help` stay fast.
"""

from __future__ import annotations

from typing import Any

from selftaught.version import __version__

#: The public API; every name but the version is `selftaught.api`'s, loaded when first used.
__all__ = [
    "BestSolution",
    "ImproveResult",
    "MetaUtilityReport",
    "RunOptions",
    "RunReport",
    "SelftaughtError",
    "Task",
    "TransferRow",
    "UnsandboxingResult",
    "__version__",
    "improve",
    "meta_utility",
    "replay",
    "resume",
    "run",
    "transfer",
    "unsandboxing_experiment",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from selftaught import api

        return getattr(api, name)
    raise AttributeError(f"module 'selftaught' has no attribute {name!r}")
