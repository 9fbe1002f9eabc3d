"""Learning parity with noise (LPN), the paper's self-improvement task.

Each instance hides a random subset of 10 bits (each bit in it with p = 0.3); 100 training
samples carry the subset's parity with 5% of labels flipped, 20 test samples carry it exactly.
A solution predicts the 20 test labels. Outputs are checked strictly: exactly 20 labels in
{0, 1}, as a list or a 1-D array, so the paper's (20, 1)-array broadcasting hack scores 0.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from selftaught.tasks.base import Instance, InstanceScore, Split, Task, paper_splits
from selftaught.tasks.validation import binary_labels

N_BITS = 10
P_IN_SECRET = 0.3
N_TRAIN = 100
N_TEST = 20

DESCRIPTION = '''\
import numpy as np

def utility(algorithm_str: str):
    """
    Learning parity with noise. algorithm_str must define
    algorithm(train_samples, train_parity, test_samples) -> predictions.
    Returns the mean fraction of test labels predicted correctly over 20 random instances.
    """
    try:
        exec(algorithm_str, globals())  # defines algorithm
    except Exception:
        return 0

    n_instances = 20
    average_correct = 0.0
    for _ in range(n_instances):
        n_bits = 10
        p_true = 0.3
        n_train_samples = 100
        n_test_samples = 20
        noise_level = 0.05
        true_bits = np.random.binomial(1, p_true, n_bits)

        samples = np.random.binomial(1, 0.5, (n_train_samples + n_test_samples, n_bits))
        parity = np.sum(samples * true_bits, axis=1) % 2
        train_samples = samples[:n_train_samples]
        train_parity = (parity[:n_train_samples] + np.random.binomial(1, noise_level, n_train_samples)) % 2
        test_samples = samples[n_train_samples:]
        test_parity = parity[n_train_samples:]

        # At most 2 seconds per instance. predictions must be exactly n_test_samples labels
        # in {0, 1} (a list, or an array of shape (n_test_samples,)); anything else, an
        # exception or a timeout scores 0 on the instance.
        try:
            predictions = algorithm(train_samples, train_parity, test_samples)
            correct = np.mean(np.asarray(predictions) == test_parity)
        except Exception:
            correct = 0
        average_correct += correct / n_instances
    return average_correct
'''

SEED_SOLUTION = """\
import numpy as np

def algorithm(train_samples, train_parity, test_samples):
    predictions = np.random.binomial(1, 0.5, len(test_samples))
    return predictions
"""


def make_parity_instance(seed: int, noise_level: float) -> Instance:
    """The instance the reference code draws after np.random.seed(seed), so its numbers are comparable."""
    generator = np.random.RandomState(seed)
    true_bits = generator.binomial(1, P_IN_SECRET, N_BITS)
    samples = generator.binomial(1, 0.5, (N_TRAIN + N_TEST, N_BITS))
    parity = np.sum(samples * true_bits, axis=1) % 2
    train_parity = parity[:N_TRAIN]
    if noise_level > 0:
        train_parity = (train_parity + generator.binomial(1, noise_level, N_TRAIN)) % 2
    return Instance(
        seed=seed,
        arguments=(samples[:N_TRAIN], train_parity, samples[N_TRAIN:]),
        answer=parity[N_TRAIN:],
    )


def score_parity_predictions(answer: np.ndarray, output: Any) -> InstanceScore:
    labels = binary_labels(output, len(answer))
    if isinstance(labels, str):
        return InstanceScore.invalid(labels)
    return InstanceScore(float(np.count_nonzero(labels == answer)) / len(answer))


class ParityNoise(Task):
    name: ClassVar[str] = "parity_noise"
    description: ClassVar[str] = DESCRIPTION
    seed_solution: ClassVar[str] = SEED_SOLUTION
    time_limit_seconds: ClassVar[float] = 2.0
    splits: ClassVar[dict[str, Split]] = paper_splits(20, 50)
    #: The probability that a training label is flipped.
    noise_level: ClassVar[float] = 0.05

    def make_instance(self, seed: int) -> Instance:
        return make_parity_instance(seed, noise_level=self.noise_level)

    def score(self, instance: Instance, output: Any) -> InstanceScore:
        return score_parity_predictions(instance.answer, output)
