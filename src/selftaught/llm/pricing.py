"""What language-model calls cost in USD, from a price table the user can extend, and a run's spending limit.

Prices are USD per million tokens, input and output, looked up by the model spec without its
`?options`, then without its `@URL`, then by the bare model name. Local models (llamacpp, scripted)
cost nothing unless priced; a model without a price costs an unknown amount, reported as such
rather than guessed, and a spending limit on it is refused (price it at 0 to declare it free). The built-in prices are the providers' list
prices when this table was written: check them, and override or extend them in `selftaught.toml`:

    [prices."openai:gpt-4o"]
    input = 2.50
    output = 10.00
"""

from __future__ import annotations

import math
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path

from selftaught.errors import SelftaughtError
from selftaught.llm.canned import CANNED_PREFIX
from selftaught.llm.model_spec import ModelSpec

#: USD per million tokens, input and output.
BUILT_IN_PRICES: dict[str, tuple[float, float]] = {
    "openai:gpt-4o": (2.50, 10.00),
    "openai:gpt-4o-mini": (0.15, 0.60),
    "openai:gpt-4.1": (2.00, 8.00),
    "openai:gpt-4.1-mini": (0.40, 1.60),
    "anthropic:claude-sonnet-4-5": (3.00, 15.00),
    "anthropic:claude-haiku-4-5": (1.00, 5.00),
    "anthropic:claude-opus-4-1": (15.00, 75.00),
}
#: Backends that run on this machine (or are scripted or canned), free unless the price table says otherwise.
FREE_BACKENDS = frozenset({"llamacpp", "scripted", CANNED_PREFIX.rstrip(":")})
CONFIG_FILE = Path("selftaught.toml")


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


FREE = Price(0.0, 0.0)


def is_usd_amount(value: float) -> bool:
    """A price, a cost or a limit: finite and at least 0 (NaN and infinity would switch a cost limit off)."""
    return math.isfinite(value) and value >= 0


@dataclass(frozen=True)
class PriceTable:
    prices: dict[str, Price]

    @classmethod
    def load(cls, config: Path | None = None) -> PriceTable:
        """The built-in prices, overridden by `[prices."SPEC"]` tables of the config file (./selftaught.toml)."""
        prices = {name: Price(*price) for name, price in BUILT_IN_PRICES.items()}
        path = config or CONFIG_FILE
        if not path.is_file():
            if config is not None:
                raise SelftaughtError(f"no such config file: {config}")
            return cls(prices)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            for name, entry in data.get("prices", {}).items():
                prices[name] = Price(float(entry["input"]), float(entry["output"]))
        except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as error:
            raise SelftaughtError(
                f"{path}: each [prices.'SPEC'] table needs numbers input and output ({error})"
            ) from None
        if not all(is_usd_amount(price.input) and is_usd_amount(price.output) for price in prices.values()):
            raise SelftaughtError(f"{path}: a price must be a finite number of USD (at least 0)")
        return cls(prices)

    def price(self, spec: str) -> Price | None:
        """The spec's price without its options, then its `BACKEND:MODEL`, then the bare model; free for local
        backends; None when nothing prices it."""
        parsed = ModelSpec.parse(spec)
        for name in (parsed.without_options, f"{parsed.backend}:{parsed.model}", parsed.model):
            if name in self.prices:
                return self.prices[name]
        return FREE if parsed.backend in FREE_BACKENDS else None

    def cost(self, spec: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for one call, 0 for local models, None when the model has no price."""
        price = self.price(spec)
        return None if price is None else price.cost(prompt_tokens, completion_tokens)

    def check_limit(self, spec: str, limit_usd: float | None) -> None:
        """Refuses a spending limit that could never be reached: one on a model whose calls cost an unknown amount."""
        if limit_usd is None or self.price(spec) is not None:
            return
        name = ModelSpec.parse(spec).without_options
        raise SelftaughtError(
            f"--max-cost cannot limit {name}: it has no known price; add one to selftaught.toml (or the --config file): "
            f'[prices."{name}"] input = USD, output = USD per million tokens (input = 0 and output = 0 if it is free)'
        )


class CostMeter:
    """Adds up a run's spending; once it reaches the limit, no further live call is made."""

    def __init__(self, limit_usd: float | None) -> None:
        self.limit_usd = limit_usd
        self.spent_usd = 0.0
        self.unpriced_calls = 0
        self._lock = threading.Lock()

    def add(self, cost: float | None) -> None:
        """Counts one call's cost; None is a call of a model without a price."""
        if cost is not None and not is_usd_amount(cost):
            # Token counts and prices are checked where they come in: this is a bug, and the spending must not drop.
            raise ValueError(f"a call's cost must be a finite number of USD (at least 0), not {cost!r}")
        with self._lock:
            if cost is None:
                self.unpriced_calls += 1
            else:
                self.spent_usd += cost

    def carry_over(self, spent_usd: float, unpriced_calls: int) -> None:
        """Counts what earlier attempts of a resumed run paid for, and their calls of a model without a price."""
        self.add(spent_usd)
        with self._lock:
            self.unpriced_calls += unpriced_calls

    @property
    def exhausted(self) -> bool:
        return self.limit_usd is not None and self.spent_usd >= self.limit_usd
