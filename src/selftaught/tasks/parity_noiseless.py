"""Learning parity without noise: the LPN task with every training label correct (a transfer task of the paper)."""

from __future__ import annotations

from typing import Any, ClassVar

from selftaught.tasks.base import Instance, InstanceScore, Split, Task, paper_splits
from selftaught.tasks.parity_noise import DESCRIPTION as NOISY_DESCRIPTION
from selftaught.tasks.parity_noise import SEED_SOLUTION, make_parity_instance, score_parity_predictions

# The LPN description with its noise taken out, so the two never drift apart.
NOISE_EDITS = (
    ("Learning parity with noise.", "Learning parity without noise."),
    ("        noise_level = 0.05\n", ""),
    (
        "        train_parity = (parity[:n_train_samples] + np.random.binomial(1, noise_level, n_train_samples)) % 2\n",
        "        train_parity = parity[:n_train_samples]\n",
    ),
)


def _without_noise(description: str) -> str:
    for old, new in NOISE_EDITS:
        if old not in description:
            raise AssertionError(f"the parity_noise description no longer contains {old.strip()!r}")
        description = description.replace(old, new)
    return description


DESCRIPTION = _without_noise(NOISY_DESCRIPTION)


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
