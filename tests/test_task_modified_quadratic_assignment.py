"""The MQAP task: seeded instances, the objective and its normalization, strict outputs, and the real sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from selftaught.sandbox.launcher import Launcher
from selftaught.tasks.base import TEST, VALIDATION, Instance, Unrepresentable
from selftaught.tasks.evaluation import Evaluation, SolutionEvaluator
from selftaught.tasks.modified_quadratic_assignment import (
    SEED_SOLUTION,
    ModifiedQuadraticAssignment,
    assignment_costs,
)

#: One task object, so its instances are made once for the whole module.
TASK = ModifiedQuadraticAssignment()

#: Restarted best-improvement swap descent, stopping its restarts well inside the 0.5 s limit.
STRONG_SOLUTION = """\
import itertools
import time
import numpy as np

def algorithm(F, D, P):
    started = time.perf_counter()
    n = len(F)
    swaps = np.array(list(itertools.combinations(range(n), 2)))
    pairs = np.arange(len(swaps))

    def costs(perms):
        return np.sum(F * D[perms[..., :, None], perms[..., None, :]], axis=(-2, -1)) + 0.5 * np.sum(
            P[np.arange(n), perms], axis=-1
        )

    best, best_cost = None, np.inf
    while best is None or time.perf_counter() - started < 0.25:
        perm = np.random.permutation(n)
        current = costs(perm)
        while True:
            neighbours = np.repeat(perm[None, :], len(swaps), axis=0)
            neighbours[pairs, swaps[:, 0]] = perm[swaps[:, 1]]
            neighbours[pairs, swaps[:, 1]] = perm[swaps[:, 0]]
            values = costs(neighbours)
            index = int(values.argmin())
            if values[index] >= current - 1e-12:
                break
            perm, current = neighbours[index], values[index]
        if current < best_cost:
            best, best_cost = perm, current
    return best
"""

RANDOM_SOLUTION = "import numpy as np\n\ndef algorithm(F, D, P):\n    return np.random.permutation(len(F))\n"
IDENTITY_SOLUTION = "def algorithm(F, D, P):\n    return list(range(len(F)))\n"


@pytest.fixture(scope="module")
def evaluator() -> Iterator[SolutionEvaluator]:
    launcher = Launcher()
    yield SolutionEvaluator(launcher)
    launcher.close()


@pytest.fixture(scope="module")
def seed_result(evaluator: SolutionEvaluator) -> Evaluation:
    return evaluator.evaluate(TASK, SEED_SOLUTION, VALIDATION, seed=7)


@pytest.mark.slow
def test_instances_are_seeded_and_deterministic() -> None:
    assert [i.seed for i in TASK.instances(VALIDATION)] == list(range(4321, 4331))
    assert [i.seed for i in TASK.instances(TEST)] == list(range(5678, 5688))
    first, again = TASK.instances(VALIDATION)[0], ModifiedQuadraticAssignment().make_instance(4321)
    generator = np.random.RandomState(4321)
    expected = (generator.rand(15, 15), generator.rand(15, 15), generator.rand(15, 15))
    for ours, repeated, reference in zip(first.arguments, again.arguments, expected, strict=True):
        assert ours.shape == (15, 15) and np.all((ours >= 0) & (ours < 1))
        assert np.array_equal(ours, repeated) and np.array_equal(ours, reference)
    assert first.answer.reference_cost == again.answer.reference_cost
    assert first.answer.reference_cost < first.answer.random_mean


def test_objective_on_a_hand_checked_case() -> None:
    flow = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    distance = np.array([[0.0, 5.0, 6.0], [7.0, 0.0, 8.0], [9.0, 1.0, 0.0]])
    preference = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    # p = (2, 0, 1): F01*D20 + F02*D21 + F10*D02 + F21*D10 = 1*9 + 2*1 + 3*6 + 4*7 = 57,
    # plus 0.5 * (P02 + P10 + P21) = 0.5 * (3 + 4 + 8) = 7.5.
    assert assignment_costs(flow, distance, preference, np.array([2, 0, 1])) == pytest.approx(64.5)
    # The identity: F01*D01 + F02*D02 + F10*D10 + F21*D21 = 5 + 12 + 21 + 4 = 42, plus 0.5 * 15.
    assert assignment_costs(flow, distance, preference, np.array([0, 1, 2])) == pytest.approx(49.5)


def cost_by_hand(instance: Instance, perm: np.ndarray) -> float:
    """The objective written out here: flow times the distance between assigned locations, plus half the preferences."""
    flow, distance, preference = instance.answer.flow, instance.answer.distance, instance.answer.preference
    n = len(perm)
    pairs = sum(flow[i, j] * distance[perm[i], perm[j]] for i in range(n) for j in range(n))
    return float(pairs + 0.5 * sum(preference[i, perm[i]] for i in range(n)))


def expected_identity_score(instance: Instance) -> float:
    """The identity's share of the way from the random assignments' mean cost to the reference's, in [0, 1]."""
    answer = instance.answer
    gain = (answer.random_mean - cost_by_hand(instance, np.arange(15))) / (answer.random_mean - answer.reference_cost)
    return min(max(gain, 0.0), 1.0)


def expected_identity_evaluation() -> float:
    instances = TASK.instances(VALIDATION)
    return sum(expected_identity_score(instance) for instance in instances) / len(instances)


@pytest.mark.slow
def test_reference_scores_one_and_identity_scores_its_computed_gain() -> None:
    for instance in TASK.instances(VALIDATION)[:3]:
        reference = instance.answer.reference_permutation
        for output in (reference, reference.tolist(), reference.astype(float), tuple(reference.tolist())):
            assert TASK.score(instance, output).score == 1.0
        identity = TASK.score(instance, list(range(15)))
        assert identity.valid and identity.score == pytest.approx(expected_identity_score(instance), abs=1e-9)
    # Not every identity gain is clamped: the check above is not 0 == 0 throughout.
    assert 0.0 < expected_identity_evaluation() < 1.0


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ([0, *range(14)], "repeat"),
        (list(range(14)), "14 entries"),
        (np.arange(14), "shape (14,)"),
        ([-1, *range(1, 15)], "0..14"),
        ([*range(14), 15], "0..14"),
        ([1.5, *range(1, 15)], "integers"),
        ([float("nan"), *range(1, 15)], "NaN"),
        ([[i] for i in range(15)], "numbers"),
        (np.arange(15).reshape(15, 1), "shape (15, 1)"),
        ([True, *range(1, 15)], "booleans"),
        ([10**400, *range(1, 15)], "0..14"),
        ("0123456789abcde", "type str"),
        (None, "None"),
        (Unrepresentable("x"), "type x"),
    ],
)
def test_invalid_outputs_score_zero_and_say_why(output: object, problem: str) -> None:
    score = TASK.score(TASK.instances(VALIDATION)[0], output)
    assert score.score == 0.0 and not score.valid
    assert problem in (score.problem or "")


@pytest.mark.slow
def test_solutions_score_in_order_through_the_sandbox(evaluator: SolutionEvaluator, seed_result: Evaluation) -> None:
    random = evaluator.evaluate(TASK, RANDOM_SOLUTION, VALIDATION, seed=7)
    identity = evaluator.evaluate(TASK, IDENTITY_SOLUTION, VALIDATION, seed=7)
    strong = evaluator.evaluate(TASK, STRONG_SOLUTION, VALIDATION, seed=7)
    assert seed_result.invalid == seed_result.errors == seed_result.timeouts == 0, seed_result
    assert strong.invalid == strong.errors == strong.timeouts == 0, strong
    assert random.score < seed_result.score and identity.score < seed_result.score
    assert identity.score == pytest.approx(expected_identity_evaluation(), abs=1e-9)
    assert strong.score >= seed_result.score - 0.05


#: Each hack, and the first problem the evaluator must record for it (every instance is invalid).
HACKS = {
    "same_index": ("return [0] * len(F)", "instance 0: entries repeat: each location must be used exactly once"),
    "column": (
        "return np.arange(len(F)).reshape(-1, 1)",
        "instance 0: the permutation has shape (15, 1), expected (15,)",
    ),
    "huge_list": (
        "return list(range(15)) * 1_000_000",
        "instance 0: the permutation is of type list of more than 1000000 items, expected a list or 1-D array",
    ),
}


def assignment_source(body: str) -> str:
    return f"import numpy as np\n\ndef algorithm(F, D, P):\n    {body}\n"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HACKS))
def test_reward_hacks_score_zero_with_the_problem_recorded(evaluator: SolutionEvaluator, name: str) -> None:
    body, problem = HACKS[name]
    result = evaluator.evaluate(TASK, assignment_source(body), VALIDATION, seed=7)
    assert (result.score, result.invalid, result.errors, result.timeouts) == (0.0, 10, 0, 0), result
    assert result.problem == problem and result.failure is None


def test_zeroing_the_matrices_changes_nothing_outside_the_call(evaluator: SolutionEvaluator) -> None:
    # Inputs are copies: the identity returned after zeroing them is judged on the real matrices.
    body = "F[:] = 0\n    D[:] = 0\n    P[:] = 0\n    return np.arange(len(F))"
    result = evaluator.evaluate(TASK, assignment_source(body), VALIDATION, seed=7)
    assert result.score == pytest.approx(expected_identity_evaluation(), abs=1e-9)
    assert result.invalid == result.errors == result.timeouts == 0 and result.problem is None
