"""What language-model calls cost in USD, from a price table the user can extend, and a run's spending limit.

Prices are USD per million tokens, input and output, looked up by the model spec (without any
`@URL`), then by the bare model name. Local models cost nothing; a model without a price costs an
unknown amount, reported as such rather than guessed. The built-in prices are the providers' list
prices when this table was written: check them, and override or extend them in `selftaught.toml`:

    [prices."openai:gpt-4o"]
    input = 2.50
    output = 10.00
"""

from __future__ import annotations

import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path

from selftaught.errors import SelftaughtError
from selftaught.llm.canned import CANNED_PREFIX

BUILT_IN_PRICES: dict[str, tuple[float, float]] = {
    "openai:gpt-4o": (2.50, 10.00),
    "openai:gpt-4o-mini": (0.15, 0.60),
    "openai:gpt-4.1": (2.00, 8.00),
    "openai:gpt-4.1-mini": (0.40, 1.60),
    "anthropic:claude-sonnet-4-5": (3.00, 15.00),
    "anthropic:claude-haiku-4-5": (1.00, 5.00),
    "anthropic:claude-opus-4-1": (15.00, 75.00),
}
FREE_PREFIXES = ("llamacpp:", "scripted:", CANNED_PREFIX)
CONFIG_FILE = Path("selftaught.toml")


@dataclass(frozen=True)
class PriceTable:
    prices: dict[str, tuple[float, float]]

    @classmethod
    def load(cls, config: Path | None = None) -> PriceTable:
        """The built-in prices, overridden by `[prices."SPEC"]` tables of the config file (./selftaught.toml)."""
        prices = dict(BUILT_IN_PRICES)
        path = config or CONFIG_FILE
        if not path.is_file():
            if config is not None:
                raise SelftaughtError(f"no such config file: {config}")
            return cls(prices)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            for name, entry in data.get("prices", {}).items():
                prices[name] = (float(entry["input"]), float(entry["output"]))
        except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as error:
            raise SelftaughtError(
                f"{path}: each [prices.'SPEC'] table needs numbers input and output ({error})"
            ) from None
        return cls(prices)

    def cost(self, spec: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for one call, 0 for local models, None when the model has no price."""
        if spec.startswith(FREE_PREFIXES):
            return 0.0
        name = spec.partition("@")[0]
        price = self.prices.get(name) or self.prices.get(name.partition(":")[2])
        if price is None:
            return None
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000


class CostMeter:
    """Adds up a run's spending; once it reaches the limit, no further live call is made."""

    def __init__(self, limit_usd: float | None) -> None:
        self.limit_usd = limit_usd
        self.spent_usd = 0.0
        self.unpriced_calls = 0
        self._lock = threading.Lock()

    def add(self, cost: float | None) -> None:
        with self._lock:
            if cost is None:
                self.unpriced_calls += 1
            else:
                self.spent_usd += cost

    @property
    def exhausted(self) -> bool:
        return self.limit_usd is not None and self.spent_usd >= self.limit_usd
