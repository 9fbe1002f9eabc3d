"""The plain rows the recorder takes, and the stamps every record carries: its time and a program's hash.

The layers that score solutions and call models make these rows from their own records
(`Evaluation.as_row`; the budgeted language model records its calls as `CallRow`s): the store knows nothing of those layers.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def program_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def finite_numbers(value: Any) -> Any:
    """`value` with each number JSON has no word for (NaN, the infinities) replaced by its text: 'nan', 'inf'.

    What a record keeps as JSON must be JSON, which SQLite's JSON functions and every reader of a store
    take; Python's json module would write `NaN` unasked. Lists, tuples and dicts are copied, not changed.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: finite_numbers(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_numbers(item) for item in value]
    return value


@dataclass(frozen=True)
class EvaluationRow:
    """One solution's score on one split of a task, as the `evaluations` table keeps it."""

    task: str
    split: str
    score: float
    instances: int
    invalid: int
    timeouts: int
    errors: int
    #: Outputs the task's own scorer raised on, and what it raised with the outputs it raised it on.
    scorer_errors: int
    scorer_problems: tuple[tuple[str, int], ...]
    problem: str | None
    failure: str | None
    seconds: float
    #: Attempts against the sandbox and limits hit, as {kind, detail}.
    violations: tuple[dict[str, str], ...]
    replayed: bool
    #: The Ray node(s) that ran the solution; None when the host's own sandbox did (or it was replayed).
    node: str | None = None


@dataclass(frozen=True)
class CallRow:
    """One language-model request and what came back, as the `lm_calls` table keeps it."""

    backend: str
    system: str
    message: str
    n: int
    temperature: float
    max_tokens: int
    seed: int | None
    responses: tuple[str, ...]
    prompt_tokens: int
    completion_tokens: int
    latency_seconds: float
    error: str | None
    #: Answered from the response cache, unpaid.
    cache_hit: bool
    #: USD; None for a model without a price.
    cost_usd: float | None
    #: Served from the run's own record when it was resumed or replayed.
    replayed: bool

    def request(self) -> dict[str, object]:
        """What was asked, as the record keeps it: the key `import` files a response under is made from it."""
        return {
            "system": self.system,
            "message": self.message,
            "n": self.n,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }
