"""The LPN task: the paper's instances, strict validation of outputs, and scores through the real sandbox."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
import pytest

from conftest import STRONG_LPN_SOLUTION, ZERO_LPN_SOLUTION
from selftaught.sandbox.launcher import Launcher
from selftaught.tasks.base import TEST, VALIDATION, Unrepresentable
from selftaught.tasks.evaluation import SolutionEvaluator
from selftaught.tasks.parity_noise import SEED_SOLUTION, ParityNoise


@pytest.fixture(scope="module")
def evaluator() -> Iterator[SolutionEvaluator]:
    launcher = Launcher()
    yield SolutionEvaluator(launcher)
    launcher.close()


def test_instances_match_the_reference_generator_and_seeds() -> None:
    task = ParityNoise()
    assert [i.seed for i in task.instances(VALIDATION)] == list(range(4321, 4341))
    assert [i.seed for i in task.instances(TEST)] == list(range(5678, 5728))
    # The reference seeds numpy's global generator, then draws secret, samples and noise in this order.
    np.random.seed(4321)
    true_bits = np.random.binomial(1, 0.3, 10)
    samples = np.random.binomial(1, 0.5, (120, 10))
    parity = np.sum(samples * true_bits, axis=1) % 2
    noisy = (parity[:100] + np.random.binomial(1, 0.05, 100)) % 2
    instance = task.instances(VALIDATION)[0]
    train_samples, train_parity, test_samples = instance.arguments
    assert np.array_equal(train_samples, samples[:100])
    assert np.array_equal(train_parity, noisy)
    assert np.array_equal(test_samples, samples[100:])
    assert np.array_equal(instance.answer, parity[100:])


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        (np.zeros((20, 1)), "shape (20, 1)"),
        (np.zeros((20, 20)), "shape (20, 20)"),
        (np.zeros(19), "shape (19,)"),
        ([0] * 21, "21 predictions"),
        ([float("nan")] * 20, "NaN"),
        ([2] * 20, "0 or 1"),
        ([0.5] * 20, "0 or 1"),
        ([[0]] * 20, "numbers"),
        ("01" * 10, "type str"),
        (None, "None"),
        (Unrepresentable("Cheater"), "Cheater"),
    ],
)
def test_invalid_outputs_score_zero_and_say_why(output: object, problem: str) -> None:
    task = ParityNoise()
    instance = task.instances(VALIDATION)[0]
    score = task.score(instance, output)
    assert score.score == 0.0 and not score.valid
    assert problem in (score.problem or "")


def test_valid_outputs_in_every_accepted_form() -> None:
    task = ParityNoise()
    instance = task.instances(VALIDATION)[0]
    answer = instance.answer
    for output in (answer, answer.tolist(), [bool(x) for x in answer], answer.astype(float)):
        assert task.score(instance, output).score == 1.0
    assert task.score(instance, 1 - answer).score == 0.0


def reference_instances(seeds: range, noise_level: float) -> list[tuple[np.ndarray, ...]]:
    """(train_samples, train_parity, test_samples, test_parity) drawn as the paper's utility draws them."""
    drawn = []
    for seed in seeds:
        np.random.seed(seed)
        true_bits = np.random.binomial(1, 0.3, 10)
        samples = np.random.binomial(1, 0.5, (120, 10))
        parity = np.sum(samples * true_bits, axis=1) % 2
        train_parity = (parity[:100] + np.random.binomial(1, noise_level, 100)) % 2 if noise_level else parity[:100]
        drawn.append((samples[:100], train_parity, samples[100:], parity[100:]))
    return drawn


def expected_score(
    seeds: range, predict: Callable[[int, tuple[np.ndarray, ...]], np.ndarray], noise: float = 0.05
) -> float:
    """The mean fraction of test labels `predict(position, instance)` gets right, computed here, not by the task."""
    instances = reference_instances(seeds, noise)
    return sum(np.count_nonzero(predict(i, x) == x[3]) / 20 for i, x in enumerate(instances)) / len(instances)


def run_in_this_process(source: str) -> Callable[..., np.ndarray]:
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # trusted test code, run here to compute the expected score without the sandbox
    return cast(Callable[..., np.ndarray], namespace["algorithm"])


VALIDATION_SEEDS, TEST_SEEDS = range(4321, 4341), range(5678, 5728)


def zeros(_: int, instance: tuple[np.ndarray, ...]) -> np.ndarray:
    return np.zeros(20, dtype=int)


@pytest.mark.slow
def test_seed_strong_and_zero_solutions_get_exactly_the_scores_computed_here(evaluator: SolutionEvaluator) -> None:
    task = ParityNoise()
    seed = evaluator.evaluate(task, SEED_SOLUTION, VALIDATION, seed=7)
    strong = evaluator.evaluate(task, STRONG_LPN_SOLUTION, VALIDATION, seed=7)
    zero = evaluator.evaluate(task, ZERO_LPN_SOLUTION, TEST, seed=7)
    # The child seeds numpy with the job's seed plus the instance's position before each call.
    coin_flips = expected_score(VALIDATION_SEEDS, lambda i, _: np.random.RandomState(7 + i).binomial(1, 0.5, 20))
    brute_force = run_in_this_process(STRONG_LPN_SOLUTION)
    assert seed.score == pytest.approx(coin_flips, abs=1e-12) and seed.invalid == 0 and seed.failure is None
    # The best training fit finds every validation instance's secret despite the noise.
    assert strong.score == expected_score(VALIDATION_SEEDS, lambda _, x: brute_force(*x[:3])) == 1.0
    assert zero.score == pytest.approx(expected_score(TEST_SEEDS, zeros), abs=1e-12) and zero.instances == 50
    assert len({seed.score, strong.score, zero.score}) == 3


#: A class whose instances equal anything: compared with `==` against the labels, they all match.
CHEATER = "class Cheater:\n        def __eq__(self, other):\n            return True\n    "
#: Each hack, and the first problem the evaluator must record for it (every instance is invalid).
HACKS = {
    # The paper's hack: a column of predictions broadcasts against the labels into a 20x20 comparison.
    "column": (
        "return np.asarray(test_samples[:, 0]).reshape(-1, 1)",
        "instance 0: predictions have shape (20, 1), expected (20,)",
    ),
    "matrix": (
        "return np.ones((len(test_samples), len(test_samples)), dtype=int)",
        "instance 0: predictions have shape (20, 20), expected (20,)",
    ),
    "always_equal": (
        CHEATER + "return Cheater()",
        "instance 0: predictions are an object of type generated.algorithm.<locals>.Cheater,"
        " expected a list or 1-D array",
    ),
    "object_array": (
        CHEATER + "return np.array([Cheater() for _ in range(len(test_samples))], dtype=object)",
        "instance 0: predictions are an object of type numpy.ndarray of dtype object, expected a list or 1-D array",
    ),
    "huge_list": (
        "return [1] * 10_000_000",
        "instance 0: predictions are an object of type list of more than 1000000 items, expected a list or 1-D array",
    ),
}


def hack_source(body: str) -> str:
    return f"import numpy as np\n\ndef algorithm(train_samples, train_parity, test_samples):\n    {body}\n"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HACKS))
def test_reward_hacks_score_zero_with_the_problem_recorded(evaluator: SolutionEvaluator, name: str) -> None:
    body, problem = HACKS[name]
    result = evaluator.evaluate(ParityNoise(), hack_source(body), VALIDATION, seed=7)
    assert (result.score, result.invalid, result.errors, result.timeouts) == (0.0, 20, 0, 0), result
    assert result.problem == problem and result.failure is None


def test_the_cheaters_would_fool_the_papers_utility() -> None:
    # What the hacks above are caught doing: the reference's np.mean(predictions == labels) gives them full marks.
    cheat = run_in_this_process(hack_source(HACKS["object_array"][0]))
    for hack in (cheat, run_in_this_process(hack_source(HACKS["always_equal"][0]))):
        assert all(
            np.mean(np.asarray(hack(*x[:3])) == x[3]) == 1.0 for x in reference_instances(VALIDATION_SEEDS, 0.05)
        )


def test_mutating_the_inputs_changes_nothing_outside_the_call(evaluator: SolutionEvaluator) -> None:
    # Inputs are copies: zeroing them and echoing a column predicts all zeros, exactly the zero solution's score.
    body = "train_parity[:] = 0\n    test_samples[:] = 0\n    return test_samples[:, 0]"
    result = evaluator.evaluate(ParityNoise(), hack_source(body), VALIDATION, seed=7)
    assert result.score == pytest.approx(expected_score(VALIDATION_SEEDS, zeros), abs=1e-12)
    assert result.invalid == result.errors == 0 and result.problem is None


def test_the_noiseless_variant_has_exact_training_labels_and_brute_force_solves_it(
    evaluator: SolutionEvaluator,
) -> None:
    from selftaught.tasks.parity_noiseless import ParityNoiseless

    task = ParityNoiseless()
    np.random.seed(4321)
    true_bits = np.random.binomial(1, 0.3, 10)
    samples = np.random.binomial(1, 0.5, (120, 10))
    _, train_parity, _ = task.instances(VALIDATION)[0].arguments
    assert np.array_equal(train_parity, np.sum(samples[:100] * true_bits, axis=1) % 2)
    assert evaluator.evaluate(task, STRONG_LPN_SOLUTION, VALIDATION, seed=7).score == 1.0
    coin_flips = expected_score(TEST_SEEDS, lambda i, _: np.random.RandomState(7 + i).binomial(1, 0.5, 20), noise=0)
    assert evaluator.evaluate(task, SEED_SOLUTION, TEST, seed=7).score == pytest.approx(coin_flips, abs=1e-12)
