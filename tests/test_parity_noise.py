"""The LPN task: the paper's instances, strict validation of outputs, and scores through the real sandbox."""

from __future__ import annotations

from collections.abc import Iterator

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


def test_seed_strong_and_zero_solutions_score_in_order(evaluator: SolutionEvaluator) -> None:
    task = ParityNoise()
    seed = evaluator.evaluate(task, SEED_SOLUTION, VALIDATION, seed=7)
    strong = evaluator.evaluate(task, STRONG_LPN_SOLUTION, VALIDATION, seed=7)
    zero = evaluator.evaluate(task, ZERO_LPN_SOLUTION, TEST, seed=7)
    assert 0.35 < seed.score < 0.65 and seed.invalid == 0 and seed.failure is None
    assert strong.score > 0.95
    assert 0.3 < zero.score < 0.7 and zero.instances == 50


HACKS = {
    # The paper's hack: a column of predictions broadcasts against the labels into a 20x20 comparison.
    "column": "return np.asarray(test_samples[:, 0]).reshape(-1, 1)",
    "matrix": "return np.ones((len(test_samples), len(test_samples)), dtype=int)",
    "always_equal": (
        "class Cheater:\n        def __eq__(self, other):\n            return np.ones(20, dtype=bool)\n"
        "    return Cheater()"
    ),
    "object_array": "return np.array([Cheater() for _ in range(20)], dtype=object) if False else np.array([None] * 20)",
    "huge_list": "return [1] * 10_000_000",
    "mutate_and_echo": "train_parity[:] = 0\n    test_samples[:] = 0\n    return test_samples[:, 0]",
}


@pytest.mark.parametrize("name", sorted(HACKS))
def test_reward_hacks_never_beat_an_honest_score(evaluator: SolutionEvaluator, name: str) -> None:
    source = f"import numpy as np\n\ndef algorithm(train_samples, train_parity, test_samples):\n    {HACKS[name]}\n"
    result = evaluator.evaluate(ParityNoise(), source, VALIDATION, seed=7)
    assert 0.0 <= result.score <= 1.0
    assert result.score < 0.7, result
    if name in ("column", "matrix", "always_equal", "object_array", "huge_list"):
        assert result.score == 0.0 and result.invalid + result.errors + result.timeouts == result.instances, result


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
    assert 0.35 < evaluator.evaluate(task, SEED_SOLUTION, TEST, seed=7).score < 0.65
