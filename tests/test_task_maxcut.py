"""The Max-Cut task: random weighted graphs, strict validation of cuts, and scores through the real sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from selftaught.sandbox.launcher import Launcher
from selftaught.tasks.base import TEST, VALIDATION, Instance, Unrepresentable
from selftaught.tasks.evaluation import SolutionEvaluator
from selftaught.tasks.maxcut import SEED_SOLUTION, MaxCut

#: Greedy in index order, then 1-flip local search: never below the seed's greedy cut.
STRONG_SOLUTION = """\
import numpy as np

def algorithm(weights):
    n = len(weights)
    sides = np.zeros(n, dtype=int)
    for node in range(1, n):
        to_placed = weights[node, :node]
        sides[node] = 1 if to_placed[sides[:node] == 0].sum() > to_placed[sides[:node] == 1].sum() else 0
    signs = 2 * sides - 1
    field = weights @ signs
    while True:
        gains = signs * field
        best = int(np.argmax(gains))
        if gains[best] <= 0:
            return (signs + 1) // 2
        field -= 2 * signs[best] * weights[:, best]
        signs[best] = -signs[best]
"""

WEAK_SOLUTION = "import numpy as np\n\ndef algorithm(weights):\n    return np.zeros(len(weights), dtype=int)\n"
RANDOM_SOLUTION = "import numpy as np\n\ndef algorithm(weights):\n    return np.random.randint(0, 2, len(weights))\n"


@pytest.fixture(scope="module")
def evaluator() -> Iterator[SolutionEvaluator]:
    launcher = Launcher()
    yield SolutionEvaluator(launcher)
    launcher.close()


@pytest.fixture(scope="module")
def seed_score(evaluator: SolutionEvaluator) -> float:
    result = evaluator.evaluate(MaxCut(), SEED_SOLUTION, VALIDATION, seed=7)
    assert result.invalid == 0 and result.errors == 0 and result.timeouts == 0 and result.failure is None, result
    return result.score


@pytest.mark.slow
def test_instances_are_deterministic_random_weighted_graphs() -> None:
    task = MaxCut()
    assert [i.seed for i in task.instances(VALIDATION)] == list(range(4321, 4341))
    assert [i.seed for i in task.instances(TEST)] == list(range(5678, 5728))
    sizes = set()
    for instance in task.instances(VALIDATION):
        (weights,) = instance.arguments
        again = task.make_instance(instance.seed)
        assert np.array_equal(weights, again.arguments[0]) and instance.answer == again.answer
        assert weights.dtype == np.int64 and 50 <= len(weights) <= 200
        assert np.array_equal(weights, weights.T) and not np.any(np.diag(weights))
        assert weights.min() == 0 and weights.max() == 10
        density = np.count_nonzero(weights) / (len(weights) * (len(weights) - 1))
        assert 0.35 < density < 0.45
        assert 0 < instance.answer < weights.sum() // 2
        sizes.add(len(weights))
    assert len(sizes) > 10
    assert not np.array_equal(task.instances(TEST)[0].arguments[0], task.instances(VALIDATION)[0].arguments[0])


def tiny_instance() -> Instance:
    # A 4-cycle 0-1-2-3-0 with weights 3, 2, 3, 2 plus a chord 0-2 of weight 1: the max cut {0, 2} | {1, 3} weighs 10.
    weights = np.zeros((4, 4), dtype=np.int64)
    for a, b, w in [(0, 1, 3), (1, 2, 2), (2, 3, 3), (3, 0, 2), (0, 2, 1)]:
        weights[a, b] = weights[b, a] = w
    return Instance(seed=0, arguments=(weights,), answer=10)


def test_scorer_on_a_hand_made_graph() -> None:
    task = MaxCut()
    instance = tiny_instance()
    for optimal in (
        [0, 1, 0, 1],
        [1, 0, 1, 0],
        np.array([0, 1, 0, 1]),
        [False, True, False, True],
        [0.0, 1.0, 0.0, 1.0],
    ):
        score = task.score(instance, optimal)
        assert score.valid and score.score == 1.0
    # Total weight 11: a random cut weighs 5.5 on average, the baseline 10, so a cut c scores (c - 5.5) / 4.5.
    assert task.score(instance, [0, 0, 1, 1]).score == 0.0  # cuts 1-2, 3-0 and the chord: 5, worse than random
    assert task.score(instance, [1, 0, 0, 0]).score == pytest.approx(0.5 / 4.5)  # cuts 0-1, 0-3 and the chord: 6
    assert task.score(instance, [0, 0, 0, 0]).score == 0.0
    # The score is judged on the host's matrix and never exceeds 1, even against a weak baseline.
    assert task.score(Instance(seed=0, arguments=instance.arguments, answer=5), [0, 1, 0, 1]).score == 1.0


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ([0, 1, 0], "3 sides"),
        (np.zeros(5), "shape (5,)"),
        (np.zeros((4, 1)), "shape (4, 1)"),
        (np.zeros((4, 4)), "shape (4, 4)"),
        ([0, 1, float("nan"), 1], "NaN"),
        ([0, 1, 2, 1], "0 or 1"),
        ([0, 0.5, 0, 1], "0 or 1"),
        ([[0], [1], [0], [1]], "numbers"),
        ("0101", "type str"),
        (None, "None"),
        (Unrepresentable("x"), "type x"),
    ],
)
def test_invalid_cuts_score_zero_and_say_why(output: object, problem: str) -> None:
    score = MaxCut().score(tiny_instance(), output)
    assert score.score == 0.0 and not score.valid
    assert problem in (score.problem or "") and "\n" not in (score.problem or "")


@pytest.mark.slow
def test_seed_weak_random_and_strong_solutions_score_in_order(evaluator: SolutionEvaluator, seed_score: float) -> None:
    task = MaxCut()
    weak = evaluator.evaluate(task, WEAK_SOLUTION, VALIDATION, seed=7)
    random = evaluator.evaluate(task, RANDOM_SOLUTION, VALIDATION, seed=7)
    strong = evaluator.evaluate(task, STRONG_SOLUTION, VALIDATION, seed=7)
    assert 0.5 < seed_score < 0.95
    assert weak.score == 0.0 and weak.invalid == 0
    assert random.score < 0.2 and random.score < seed_score and random.invalid == 0
    assert seed_score <= strong.score <= 1.0 and strong.invalid + strong.timeouts + strong.errors == 0, strong


HACKS = {
    "matrix": "return weights",
    "column": "return np.zeros((len(weights), 1), dtype=int)",
    "one_too_many": "return [i % 2 for i in range(len(weights) + 1)]",
    "nans": "return np.full(len(weights), np.nan)",
    "huge_list": "return [1] * 10_000_000",
    "mutate_weights": "weights[:] = 0\n    return [i % 2 for i in range(len(weights))]",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HACKS))
def test_reward_hacks_never_beat_an_honest_score(evaluator: SolutionEvaluator, seed_score: float, name: str) -> None:
    source = f"import numpy as np\n\ndef algorithm(weights):\n    {HACKS[name]}\n"
    result = evaluator.evaluate(MaxCut(), source, VALIDATION, seed=7)
    assert 0.0 <= result.score < seed_score and result.score <= 1.0, result
    if name != "mutate_weights":
        # Every output is refused; one too large to send in time counts as a timeout by the host's clock.
        assert result.score == 0.0 and result.invalid + result.errors + result.timeouts == result.instances, result
