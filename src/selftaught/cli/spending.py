"""What a command that calls the language model spent, worded and keyed alike by `run`, `improve` and `meta-utility`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def plural(count: int, noun: str) -> str:
    """`1 response`, `2 responses`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class Spending:
    """Language-model calls and their USD; `unpriced_calls` were made to a model without a price (cost unknown)."""

    lm_calls: int
    lm_responses: int
    cost_usd: float
    max_cost_usd: float | None
    unpriced_calls: int = 0

    def calls_text(self) -> str:
        return f"{plural(self.lm_calls, 'language-model call')} ({plural(self.lm_responses, 'response')})"

    def cost_text(self) -> str:
        # An unpriced call costs an unknown amount: said apart, so that the USD shown is never read as the whole.
        unpriced = f" (+{self.unpriced_calls} calls of a model without a price)" if self.unpriced_calls else ""
        cap = "" if self.max_cost_usd is None else f" of the ${self.max_cost_usd:g} cap"
        return f"${self.cost_usd:.4f}{cap} spent{unpriced}"

    def as_json(self) -> dict[str, Any]:
        """The keys `run --json` has always had for these numbers, so scripts read every command the same way."""
        return {
            "lm_calls": self.lm_calls,
            "lm_responses": self.lm_responses,
            "cost_usd": self.cost_usd,
            "max_cost_usd": self.max_cost_usd,
            "unpriced_calls": self.unpriced_calls,
        }
