"""Budgets and profiles of a run, as frozen dataclasses; the paper's reference numbers are the `paper` profile."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ImproverBudget:
    """What one improver run may spend; the host enforces every number."""

    #: Calls to batch_prompt or prompt.
    language_model_calls: int = 4
    #: Responses (messages) per call: `language_model.max_responses_per_call`.
    responses_per_call: int = 6
    #: Calls of `utility`; past it the utility returns 0.
    utility_calls: int = 25
    #: Tokens per response.
    max_tokens: int = 1024
    #: The improver's own running time (time spent answering its calls in the host is not counted).
    own_seconds: float = 600.0


@dataclass(frozen=True)
class Profile:
    """A full configuration of the STOP loop."""

    name: str
    #: Self-improvement iterations T.
    iterations: int
    #: Budget of every improver run: on the downstream task and on the improver itself.
    improver: ImproverBudget
    #: Calls of the meta-utility during one self-improvement step (replaces `improver.utility_calls` there).
    meta_utility_calls: int
    #: Improver runs D averaged by one meta-utility evaluation.
    meta_utility_runs: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        """The profile `dataclasses.asdict` turned into `data` (as recorded with every run)."""
        return cls(**{**data, "improver": ImproverBudget(**data["improver"])})

    def with_overrides(self, **overrides: Any) -> Profile:
        """A copy with the given fields changed; improver budget fields may be given by name too."""
        improver_fields = {
            k: v for k, v in overrides.items() if k in ImproverBudget.__dataclass_fields__ and v is not None
        }
        profile_fields = {k: v for k, v in overrides.items() if k in Profile.__dataclass_fields__ and v is not None}
        return replace(self, **profile_fields, improver=replace(self.improver, **improver_fields))


PROFILES: dict[str, Profile] = {
    # The paper's reference budgets: about 3,000 responses per iteration.
    "paper": Profile(
        name="paper",
        iterations=3,
        improver=ImproverBudget(),
        meta_utility_calls=25,
        meta_utility_runs=5,
    ),
    # Small enough to finish in minutes on 2 cores with the embedded model.
    "quick": Profile(
        name="quick",
        iterations=2,
        improver=ImproverBudget(language_model_calls=2, responses_per_call=3, utility_calls=4, max_tokens=512),
        meta_utility_calls=4,
        meta_utility_runs=2,
    ),
}
