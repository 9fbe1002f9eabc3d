"""The 3-SAT task: planted instances, strict validation of assignments, and scores through the real sandbox."""

from __future__ import annotations

import random
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from selftaught.sandbox.launcher import Launcher
from selftaught.tasks.base import TEST, VALIDATION, Instance, Unrepresentable
from selftaught.tasks.evaluation import Evaluation, SolutionEvaluator
from selftaught.tasks.three_sat import DESCRIPTION, SEED_SOLUTION, ThreeSat

#: WalkSAT with incremental break counts, free moves first, and restarts until a time budget runs out.
STRONG_SOLUTION = """\
import random
import time

def algorithm(n, clauses):
    deadline = time.perf_counter() + 0.07
    occurrences = [[] for _ in range(n + 1)]
    for index, clause in enumerate(clauses):
        for literal in clause:
            occurrences[abs(literal)].append((index, literal > 0))
    while True:
        value = [False] + [random.random() < 0.5 for _ in range(n)]
        true_count = [sum(value[abs(k)] == (k > 0) for k in clause) for clause in clauses]
        unsatisfied = {index for index, count in enumerate(true_count) if count == 0}
        for step in range(20 * n * n):
            if not unsatisfied:
                return value[1:]
            if step % 64 == 0 and time.perf_counter() > deadline:
                return value[1:]
            clause = clauses[random.choice(tuple(unsatisfied))]

            def breaks(variable):
                return sum(true_count[i] == 1 and value[variable] == positive for i, positive in occurrences[variable])

            scored = [(breaks(abs(k)), abs(k)) for k in clause]
            best_break, best = min(scored)
            if best_break > 0 and random.random() < 0.5:
                best = abs(random.choice(clause))
            value[best] = not value[best]
            for i, positive in occurrences[best]:
                if value[best] == positive:
                    true_count[i] += 1
                    if true_count[i] == 1:
                        unsatisfied.discard(i)
                else:
                    true_count[i] -= 1
                    if true_count[i] == 0:
                        unsatisfied.add(i)
"""

#: Sets every variable True: satisfies a planted instance only by luck.
ALL_TRUE_SOLUTION = "def algorithm(n, clauses):\n    return [True] * n\n"


@pytest.fixture(scope="module")
def evaluator() -> Iterator[SolutionEvaluator]:
    launcher = Launcher()
    yield SolutionEvaluator(launcher)
    launcher.close()


@pytest.fixture(scope="module")
def seed_result(evaluator: SolutionEvaluator) -> Evaluation:
    return evaluator.evaluate(ThreeSat(), SEED_SOLUTION, VALIDATION, seed=7)


@pytest.mark.slow
def test_instances_are_deterministic_planted_and_well_formed() -> None:
    task = ThreeSat()
    assert [i.seed for i in task.instances(VALIDATION)] == list(range(4321, 4351))
    assert [i.seed for i in task.instances(TEST)] == list(range(5678, 5708))
    sizes = set()
    for instance in task.instances(VALIDATION) + task.instances(TEST):
        assert task.make_instance(instance.seed) == instance
        n, clauses = instance.arguments
        assert isinstance(n, int) and 5 <= n <= 50
        assert len(clauses) == 4 * n
        planted = instance.answer
        assert len(planted) == n
        for clause in clauses:
            assert len(clause) == 3 and all(type(k) is int and 1 <= abs(k) <= n for k in clause)
            assert len({abs(k) for k in clause}) == 3
            assert any(planted[abs(k) - 1] == (k > 0) for k in clause)
        assert task.score(instance, planted).score == 1.0
        sizes.add(n)
    assert len(sizes) > 10
    assert task.make_instance(1).arguments != task.make_instance(2).arguments


def test_description_draws_the_same_instances_and_scores_like_the_task() -> None:
    assert "0.1 seconds" in DESCRIPTION and "def utility(algorithm_str: str)" in DESCRIPTION
    # The description's generator, run after np.random.seed, yields the task's own instance.
    loop = DESCRIPTION.split("for _ in range(n_instances):\n", 1)[1].split("\n\n", 1)[0]
    drawn: dict[str, Any] = {"np": np}
    np.random.seed(4321)
    exec(textwrap.dedent(loop), drawn)
    assert (drawn["n"], drawn["clauses"]) == ThreeSat().make_instance(4321).arguments
    namespace: dict[str, Any] = {}
    exec(DESCRIPTION, namespace)
    assert namespace["utility"](ALL_TRUE_SOLUTION) < namespace["utility"](STRONG_SOLUTION) == 1.0
    assert namespace["utility"]("def algorithm(n, clauses):\n    return [float('nan')] * n\n") == 0.0


#: (x1 or x2 or not x3) and (not x1 or not x2 or x3).
TINY = Instance(seed=0, arguments=(3, [[1, 2, -3], [-1, -2, 3]]), answer=[True, False, False])


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        # Satisfying, including assignments other than the planted one, in every accepted form.
        ([True, False, False], 1.0),
        ([1, 0, 0], 1.0),
        ((0, 0, 0), 1.0),
        ([1.0, 1.0, 1.0], 1.0),
        (np.array([False, True, False]), 1.0),
        (np.array([0.0, 1.0, 0.0]), 1.0),
        (np.array([1, 1, 1], dtype=np.int8), 1.0),
        # Violating: (x1 or x2 or not x3) fails, then (not x1 or not x2 or x3) fails.
        ([False, False, True], 0.0),
        (np.array([0, 0, 1]), 0.0),
        ([1, 1, 0], 0.0),
        ((1.0, 1.0, 0.0), 0.0),
    ],
)
def test_scores_check_the_clauses_not_the_planted_answer(output: object, expected: float) -> None:
    score = ThreeSat().score(TINY, output)
    assert score.valid and score.problem is None and score.score == expected


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ([1, 0], "2 assignment values, expected 3"),
        ([1, 0, 0, 1], "4 assignment values"),
        (np.zeros(4), "shape (4,)"),
        (np.zeros((3, 1)), "shape (3, 1)"),
        ([float("nan"), 0, 0], "NaN"),
        ([2, 0, 0], "0 or 1"),
        ([0.5, 0, 0], "0 or 1"),
        ([[1], [0], [0]], "numbers"),
        ([[1, 2, -3], [-1, -2, 3], [1, 2, 3]], "numbers"),
        ("100", "type str"),
        (None, "None"),
        ({"1": True}, "type dict"),
        (Unrepresentable("x"), "type x"),
    ],
)
def test_invalid_outputs_score_zero_and_say_why(output: object, problem: str) -> None:
    score = ThreeSat().score(TINY, output)
    assert score.score == 0.0 and not score.valid
    assert problem in (score.problem or ""), score.problem
    assert "\n" not in (score.problem or "")


@pytest.mark.slow
def test_seed_weak_and_strong_solutions_score_in_order(evaluator: SolutionEvaluator, seed_result: Evaluation) -> None:
    task = ThreeSat()
    weak = evaluator.evaluate(task, ALL_TRUE_SOLUTION, VALIDATION, seed=7)
    strong = evaluator.evaluate(task, STRONG_SOLUTION, VALIDATION, seed=7)
    assert seed_result.score >= 0.5 and seed_result.invalid == 0 and seed_result.failure is None, seed_result
    assert weak.score < seed_result.score and weak.invalid == 0, weak
    assert strong.score >= seed_result.score and strong.score == 1.0, strong
    assert seed_result.instances == weak.instances == strong.instances == 30


def satisfied_share(assignments: list[list[bool]]) -> float:
    """The share of validation instances whose every clause the assignment satisfies, checked here clause by clause."""
    instances = ThreeSat().instances(VALIDATION)
    satisfied = [
        all(any(values[abs(k) - 1] == (k > 0) for k in clause) for clause in instance.arguments[1])
        for instance, values in zip(instances, assignments, strict=True)
    ]
    return satisfied.count(True) / len(instances)


@pytest.mark.slow
def test_the_all_true_assignment_scores_exactly_the_share_it_satisfies(evaluator: SolutionEvaluator) -> None:
    result = evaluator.evaluate(ThreeSat(), ALL_TRUE_SOLUTION, VALIDATION, seed=7)
    sizes = [instance.arguments[0] for instance in ThreeSat().instances(VALIDATION)]
    assert result.score == pytest.approx(satisfied_share([[True] * n for n in sizes]), abs=1e-12)


def first_instance_size() -> tuple[int, int]:
    n, clauses = ThreeSat().instances(VALIDATION)[0].arguments
    return n, len(clauses)


N0, CLAUSES0 = first_instance_size()
#: Each hack, and the first problem the evaluator must record for it (every instance is invalid).
HACKS = {
    "echo_clauses": ("return clauses", f"instance 0: {CLAUSES0} assignment values, expected {N0}"),
    "one_too_many": ("return [True] * (n + 1)", f"instance 0: {N0 + 1} assignment values, expected {N0}"),
    "nans": ("return [float('nan')] * n", "instance 0: assignment values contain NaN or infinity"),
    "nan_array": (
        "import numpy as np\n    return np.full(n, np.nan)",
        "instance 0: assignment values contain NaN or infinity",
    ),
    "huge_list": (
        "return [1] * 10_000_000",
        "instance 0: assignment values are an object of type list of more than 1000000 items,"
        " expected a list or 1-D array",
    ),
    "always_true_object": (
        "class Cheater:\n        def __eq__(self, other):\n            return True\n"
        "        def __len__(self):\n            return n\n    return Cheater()",
        "instance 0: assignment values are an object of type generated.algorithm.<locals>.Cheater,"
        " expected a list or 1-D array",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HACKS))
def test_reward_hacks_score_zero_with_the_problem_recorded(evaluator: SolutionEvaluator, name: str) -> None:
    body, problem = HACKS[name]
    result = evaluator.evaluate(ThreeSat(), f"def algorithm(n, clauses):\n    {body}\n", VALIDATION, seed=7)
    if name == "huge_list" and result.timeouts:
        # Building ten million items can take longer than the 0.1 s limit on a busy machine: a timeout is as good.
        problem = result.problem if result.problem == "instance 0: timed out (limit 0.1 s)" else problem
    assert (result.score, result.invalid + result.timeouts, result.errors) == (0.0, 30, 0), result
    assert result.timeouts == 0 or name == "huge_list", result
    assert result.problem == problem and result.failure is None


def test_emptying_the_clauses_changes_nothing_outside_the_call(evaluator: SolutionEvaluator) -> None:
    # Inputs are copies: the random assignment is judged against the real clauses. The child seeds
    # `random` with the job's seed plus the instance's position, so the assignment is known here.
    source = """\
import random

def algorithm(n, clauses):
    for clause in clauses:
        clause[:] = [1, 1, 1]
    clauses[:] = []
    return [random.random() < 0.5 for _ in range(n)]
"""
    result = evaluator.evaluate(ThreeSat(), source, VALIDATION, seed=7)
    sizes = [instance.arguments[0] for instance in ThreeSat().instances(VALIDATION)]
    coin_flips = [
        [rng.random() < 0.5 for _ in range(n)] for rng, n in ((random.Random(7 + i), n) for i, n in enumerate(sizes))
    ]
    assert result.score == pytest.approx(satisfied_share(coin_flips), abs=1e-12)
    assert result.invalid == result.errors == result.timeouts == 0 and result.problem is None
