"""Learning parity without noise: the LPN task with every training label correct (a transfer task of the paper)."""

from __future__ import annotations

from typing import Any, ClassVar

from selftaught.tasks.base import Instance, InstanceScore, Split, Task, paper_splits
from selftaught.tasks.parity_noise import SEED_SOLUTION, make_parity_instance, score_parity_predictions

DESCRIPTION = '''\
import numpy as np

def utility(algorithm_str: str):
    """
    Learning parity without noise. algorithm_str must define
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
        true_bits = np.random.binomial(1, p_true, n_bits)

        samples = np.random.binomial(1, 0.5, (n_train_samples + n_test_samples, n_bits))
        parity = np.sum(samples * true_bits, axis=1) % 2
        train_samples, train_parity = samples[:n_train_samples], parity[:n_train_samples]
        test_samples, test_parity = samples[n_train_samples:], parity[n_train_samples:]

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


class ParityNoiseless(Task):
    name: ClassVar[str] = "parity_noiseless"
    description: ClassVar[str] = DESCRIPTION
    seed_solution: ClassVar[str] = SEED_SOLUTION
    time_limit_seconds: ClassVar[float] = 2.0
    splits: ClassVar[dict[str, Split]] = paper_splits(20, 50)

    def make_instance(self, seed: int) -> Instance:
        return make_parity_instance(seed, noise_level=0.0)

    def score(self, instance: Instance, output: Any) -> InstanceScore:
        return score_parity_predictions(instance.answer, output)
