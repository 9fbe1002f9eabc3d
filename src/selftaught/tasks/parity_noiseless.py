"""Learning parity without noise: the LPN task with every training label correct (a transfer task of the paper)."""

from __future__ import annotations

from typing import ClassVar

from selftaught.tasks.parity_noise import DESCRIPTION as NOISY_DESCRIPTION
from selftaught.tasks.parity_noise import ParityNoise

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


class ParityNoiseless(ParityNoise):
    """The same seed solution, limits, splits and scorer; only the training labels are all correct."""

    name: ClassVar[str] = "parity_noiseless"
    description: ClassVar[str] = DESCRIPTION
    noise_level: ClassVar[float] = 0.0
