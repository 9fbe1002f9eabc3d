"""What a downstream task is: a description for the model, a seed solution, and a hidden scorer with seeded splits.

The scorer never runs generated code: the host makes each instance, a sandboxed child runs the
solution on the instance's public arguments, and `Task.score` judges the raw output against the
instance's hidden answer. A task's scores lie in [0, 1].
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar


@dataclass(frozen=True)
class Split:
    """Instances `base_seed + i` for i < count; `validation` guides optimization, `test` is for reporting only."""

    name: str
    base_seed: int
    count: int

    def seeds(self) -> range:
        return range(self.base_seed, self.base_seed + self.count)


@dataclass(frozen=True)
class Instance:
    """One problem: `arguments` go to the solution, `answer` stays in the host for scoring."""

    seed: int
    arguments: tuple[Any, ...]
    answer: Any


@dataclass(frozen=True)
class InstanceScore:
    """The score of one output; an invalid output scores 0 and says why."""

    score: float
    valid: bool = True
    problem: str | None = None

    @classmethod
    def invalid(cls, problem: str) -> InstanceScore:
        return cls(0.0, valid=False, problem=problem)


@dataclass(frozen=True)
class Unrepresentable:
    """Stands for an output that could not cross the sandbox boundary as data (a function, a custom object)."""

    type_name: str


class ScorerContractError(Exception):
    """A scorer returned something other than a score: a bug in the scorer, which the message names."""


VALIDATION = "validation"
TEST = "test"
#: The paper's seeds: validation instances 4321+i, test instances 5678+i.
VALIDATION_BASE_SEED, TEST_BASE_SEED = 4321, 5678


def paper_splits(validation_count: int, test_count: int) -> dict[str, Split]:
    """The validation and test splits with the paper's seeds and the given sizes."""
    return {
        VALIDATION: Split(VALIDATION, VALIDATION_BASE_SEED, validation_count),
        TEST: Split(TEST, TEST_BASE_SEED, test_count),
    }


class Task(ABC):
    """A downstream task. Subclasses set the class attributes and implement `make_instance` and `score`.

    examples/knapsack_task.py is a complete one, used through the Python API; docs/tasks.md
    ("A task in Python") spells out the contract.
    """

    name: ClassVar[str]
    #: The public description shown to the language model as `utility.str`.
    description: ClassVar[str]
    #: The solution the improver starts from.
    seed_solution: ClassVar[str]
    #: The function a solution must define.
    entry_point: ClassVar[str] = "algorithm"
    #: Limit per instance, measured inside the sandbox around the call alone.
    time_limit_seconds: ClassVar[float]
    splits: ClassVar[dict[str, Split]]

    @abstractmethod
    def make_instance(self, seed: int) -> Instance:
        """The instance for a seed; deterministic."""

    @abstractmethod
    def score(self, instance: Instance, output: Any) -> InstanceScore:
        """Judges a solution's raw output (already decoded from the sandbox) strictly.

        Raising is a bug in the scorer, not a fault of the output: the output scores 0 and is counted
        as a scorer error, apart from invalid outputs.
        """

    @property
    def scorer_file(self) -> str | None:
        """The file of the scorer's own code: a scorer error names its line there."""
        try:
            return inspect.getsourcefile(type(self))
        except (TypeError, OSError):  # a class with no file (built-in, or typed into a REPL)
            return None

    def instances(self, split: str) -> tuple[Instance, ...]:
        return _instances(self, split)


@cache
def _instances(task: Task, split: str) -> tuple[Instance, ...]:
    return tuple(task.make_instance(seed) for seed in task.splits[split].seeds())
