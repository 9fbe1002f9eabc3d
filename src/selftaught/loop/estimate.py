"""What a command can spend at most, worked out before anything runs: calls, responses, tokens and USD.

The numbers of calls and responses are exact upper bounds: the host enforces every budget they
come from. Token counts are estimates from the actual prompt texts, made to err high:

- a prompt costs at most its improver's own source (where any literal prompt text lives) plus the
  solution and the utility description it is given, at a token a byte (a byte-level tokenizer's
  token is at least one byte: digits, CJK text and emoji come close to that, code does not);
- an improver the language model wrote is one response, so at most `max_tokens` tokens;
- every response pays for its prompt again (as when a server ignores `n`), and is `max_tokens` long.

An improver that builds its prompts programmatically (repeating a text, say) can exceed the
prompt estimate; `--max-cost` is the limit that holds regardless (see docs/models.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from selftaught.config import ImproverBudget, Profile
from selftaught.llm.billing import TEMPLATE_TOKENS_PER_MESSAGE
from selftaught.llm.pricing import PriceTable
from selftaught.llm.registry import backend_info
from selftaught.loop.meta_utility import meta_utility_description
from selftaught.loop.seed_improver import SEED_IMPROVER
from selftaught.options import RunOptions
from selftaught.tasks.base import Task
from selftaught.tasks.registry import get_task


def text_tokens(text: str) -> int:
    """At least the tokens of `text`, whatever it holds: one a UTF-8 byte."""
    return len(text.encode("utf-8"))


@dataclass(frozen=True)
class Spend:
    """Language-model calls, the responses they ask for, and the prompt tokens those responses pay for."""

    calls: int = 0
    responses: int = 0
    prompt_tokens: int = 0

    def __add__(self, other: Spend) -> Spend:
        return Spend(
            self.calls + other.calls, self.responses + other.responses, self.prompt_tokens + other.prompt_tokens
        )


def improver_runs(runs: int, budget: ImproverBudget, prompt_tokens: int) -> Spend:
    """`runs` improver runs that each use their whole language-model budget with prompts of `prompt_tokens`."""
    calls = runs * budget.language_model_calls
    responses = calls * budget.responses_per_call
    return Spend(calls, responses, responses * prompt_tokens)


def prompt_tokens(improver_tokens: int, *texts: str) -> int:
    """A prompt's tokens: its improver's source (its literal prompt text) plus the texts it is given."""
    return improver_tokens + sum(text_tokens(text) for text in texts) + 2 * TEMPLATE_TOKENS_PER_MESSAGE


def written_improver_tokens(profile: Profile, known: str) -> int:
    """The longest improver a run can hold: the one it started with, or one response of the model."""
    return max(text_tokens(known), profile.improver.max_tokens)


@dataclass(frozen=True)
class CostEstimate:
    command: str
    model: str
    profile: str
    tasks: tuple[str, ...]
    lm_calls: int
    lm_responses: int
    prompt_tokens: int
    completion_tokens: int
    #: None when the model has no price.
    usd: float | None
    max_cost_usd: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"estimate": "worst case", **vars(self), "tasks": list(self.tasks)}

    def summary(self) -> str:
        usd = "an unknown amount (the model has no price)" if self.usd is None else f"${self.usd:.4f}"
        cap = "" if self.max_cost_usd is None else f"; --max-cost ${self.max_cost_usd:g} ends it sooner"
        return (
            f"worst case: {self.lm_calls:,} language-model calls, {self.lm_responses:,} responses, "
            f"{self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion tokens, {usd}{cap}"
        )


def estimate(command: str, options: RunOptions, spend: Spend, tasks: Iterable[Task]) -> CostEstimate:
    """Prices `spend` for `options.model`; refuses an unknown spec or a limit on an unpriced model, as a run would."""
    backend_info(options.model)
    prices = PriceTable.load(options.config)
    prices.check_limit(options.model, options.max_cost_usd)
    price = prices.price(options.model)
    completion_tokens = spend.responses * options.profile.improver.max_tokens
    return CostEstimate(
        command=command,
        model=options.model,
        profile=options.profile.name,
        tasks=tuple(task.name for task in tasks),
        lm_calls=spend.calls,
        lm_responses=spend.responses,
        prompt_tokens=spend.prompt_tokens,
        completion_tokens=completion_tokens,
        usd=None if price is None else price.cost(spend.prompt_tokens, completion_tokens),
        max_cost_usd=options.max_cost_usd,
    )


def estimate_improve(options: RunOptions, improver: str, initial_solution: str | None = None) -> CostEstimate:
    task = get_task(options.task)
    solution = task.seed_solution if initial_solution is None else initial_solution
    prompt = prompt_tokens(text_tokens(improver), solution, task.description)
    return estimate("improve", options, improver_runs(1, options.profile.improver, prompt), [task])


def estimate_meta_utility(options: RunOptions, improver: str) -> CostEstimate:
    task = get_task(options.task)
    prompt = prompt_tokens(text_tokens(improver), task.seed_solution, task.description)
    runs = options.profile.meta_utility_runs
    return estimate("meta-utility", options, improver_runs(runs, options.profile.improver, prompt), [task])


def estimate_run(options: RunOptions, improver: str) -> CostEstimate:
    """Iteration 0 scores the improver (D runs); each later one runs the current improver on itself and
    scores up to `meta_utility_calls` candidates and the one it returns (D runs each); with speculation
    up to `meta_utility_calls` more, proposed but never asked about."""
    task, profile = get_task(options.task), options.profile
    budget, runs = profile.improver, profile.meta_utility_runs
    spend = improver_runs(runs, budget, prompt_tokens(text_tokens(improver), task.seed_solution, task.description))
    current = written_improver_tokens(profile, improver)
    on_itself = prompt_tokens(2 * current, meta_utility_description(profile))  # its source is also the solution
    on_task = prompt_tokens(current, task.seed_solution, task.description)
    for _ in range(profile.iterations):
        spend += improver_runs(1, budget, on_itself)
        scored = profile.meta_utility_calls * (2 if options.speculate else 1)
        spend += improver_runs((scored + 1) * runs, budget, on_task)
    return estimate("run", options, spend, [task])


def estimate_transfer(options: RunOptions, improver: str, tasks: Iterable[str], repeats: int) -> CostEstimate:
    """Each task: `repeats` runs of the seed improver and of the improver."""
    spend, resolved = Spend(), [get_task(name) for name in tasks]
    for task in resolved:
        for source in (SEED_IMPROVER, improver):
            prompt = prompt_tokens(text_tokens(source), task.seed_solution, task.description)
            spend += improver_runs(repeats, options.profile.improver, prompt)
    return estimate("transfer", options, spend, resolved)
