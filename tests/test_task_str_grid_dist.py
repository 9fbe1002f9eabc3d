"""str_grid_dist: a string at a given grid distance, scored strictly through the real sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from selftaught.sandbox.launcher import Launcher
from selftaught.tasks.base import TEST, VALIDATION, Instance, Unrepresentable
from selftaught.tasks.evaluation import SolutionEvaluator
from selftaught.tasks.str_grid_dist import SEED_SOLUTION, StrGridDist, grid_dist

# Searches single flips and pairs of flips from t for the exact distance: exact on most instances.
SEARCH_SOLUTION = """\
import itertools

def grid_dist(s, t):
    return sum(a != b for a, b in zip(s, t)) + sum(a != b for a, b in zip(s, s[1:])) + sum(a != b for a, b in zip(t, t[1:]))

def algorithm(t, dist):
    best, best_error = t, abs(grid_dist(t, t) - dist)
    flip = {"A": "B", "B": "A"}
    for k in (1, 2, 3):
        for positions in itertools.combinations(range(len(t)), k):
            s = list(t)
            for p in positions:
                s[p] = flip[s[p]]
            s = "".join(s)
            error = abs(grid_dist(s, t) - dist)
            if error < best_error:
                best, best_error = s, error
                if error == 0:
                    return best
    return best
"""


@pytest.fixture(scope="module")
def evaluator() -> Iterator[SolutionEvaluator]:
    launcher = Launcher()
    yield SolutionEvaluator(launcher)
    launcher.close()


def test_instances_are_deterministic_and_solvable() -> None:
    task = StrGridDist()
    for instance in task.instances(VALIDATION) + task.instances(TEST):
        t, dist = instance.arguments
        assert 1 <= len(t) <= 30 and set(t) <= {"A", "B"}
        assert grid_dist(instance.answer, t) == dist  # the hidden string is at exactly that distance
    assert task.make_instance(4321) == task.instances(VALIDATION)[0]


def test_hand_checked_scores() -> None:
    task = StrGridDist()
    instance = Instance(seed=0, arguments=("AB", 2), answer="BB")
    assert grid_dist("BB", "AB") == 1 + 0 + 1
    assert task.score(instance, "BB").score == 1.0
    # grid_dist("BA", "AB") = Hamming 2 + transitions 1 + 1 = 4, two off the asked 2, with n = 2.
    assert task.score(instance, "BA").score == pytest.approx(0.5 - 2 / 12)
    for bad in ("ABC", "A", "ab", 2, None, ["A", "B"], Unrepresentable("x")):
        judged = task.score(instance, bad)
        assert judged.score == 0.0 and not judged.valid and judged.problem


@pytest.mark.slow
def test_scores_in_order_through_the_sandbox(evaluator: SolutionEvaluator) -> None:
    task = StrGridDist()
    seed = evaluator.evaluate(task, SEED_SOLUTION, TEST, seed=7)
    search = evaluator.evaluate(task, SEARCH_SOLUTION, TEST, seed=7)
    invalid = evaluator.evaluate(task, "def algorithm(t, dist):\n    return dist\n", TEST, seed=7)
    assert 0.3 < seed.score < 0.6 and seed.invalid == 0
    assert search.score > seed.score + 0.2
    assert invalid.score == 0.0 and invalid.invalid == invalid.instances


@pytest.mark.slow
@pytest.mark.parametrize(
    "hack",
    [
        "return t + t",
        "return 'A' * 10_000_000",
        "return [t]",
        "return None",
        "return t.lower()",
        "return float('nan')",
    ],
)
def test_hacks_never_beat_an_honest_answer(evaluator: SolutionEvaluator, hack: str) -> None:
    task = StrGridDist()
    result = evaluator.evaluate(task, f"def algorithm(t, dist):\n    {hack}\n", VALIDATION, seed=7)
    honest = evaluator.evaluate(task, SEED_SOLUTION, VALIDATION, seed=7)
    assert result.score <= honest.score and result.score == 0.0
