"""The seam between the loop and whatever runs generated code: one method, data in, data out.

`Launcher` runs jobs in confined children on this machine; a distributed engine (Ray) will run
the same jobs on other machines by implementing the same method. Callers parallelize by calling
it from several threads, which every implementation must allow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from selftaught.sandbox.outcome import ChildOutcome, SandboxLimits

#: Answers a call the child makes (`language_model.batch_prompt`, `utility`, ...); raises CallRefused to refuse.
CallHandler = Callable[[str, dict[str, Any]], Any]


class JobRunner(Protocol):
    def run(self, job: Mapping[str, Any], limits: SandboxLimits, serve: CallHandler | None = None) -> ChildOutcome:
        """Runs one job of generated code in isolation and returns what came back, never raising for its failures."""
        ...
